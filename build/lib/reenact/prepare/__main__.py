"""``python -m reenact.prepare``."""

from __future__ import annotations

from reenact.prepare.cli import main

raise SystemExit(main())
