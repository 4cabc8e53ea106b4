"""``python -m reenact.live``: the command lives in :mod:`reenact.cli.live`."""

from reenact.cli.live import main

if __name__ == "__main__":
    main()
