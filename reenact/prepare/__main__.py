"""``python -m reenact.prepare``."""

from __future__ import annotations

from reenact.prepare.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
