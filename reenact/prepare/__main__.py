"""``python -m reenact.prepare``: the command lives in :mod:`reenact.cli.prepare`."""

import sys

from reenact.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
