"""``python -m reenact.info``: the command lives in :mod:`reenact.cli.info`."""

import sys

from reenact.cli.info import main

if __name__ == "__main__":
    sys.exit(main())
