"""``python -m reenact.convert``: the command lives in :mod:`reenact.cli.convert`."""

import sys

from reenact.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
