"""``python -m reenact.evaluate``: the command lives in :mod:`reenact.cli.evaluate`."""

from reenact.cli.evaluate import main

if __name__ == "__main__":
    main()
