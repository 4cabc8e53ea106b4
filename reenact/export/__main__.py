"""``python -m reenact.export``: the command lives in :mod:`reenact.cli.export`."""

from reenact.cli.export import main

if __name__ == "__main__":
    main()
