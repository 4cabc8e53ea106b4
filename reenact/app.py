"""``python -m reenact.app``: the command lives in :mod:`reenact.cli.app`."""

from reenact.cli.app import main

if __name__ == "__main__":
    main()
