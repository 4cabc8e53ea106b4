"""``python -m reenact.warp``: the command lives in :mod:`reenact.cli.warp`."""

from reenact.cli.warp import main

if __name__ == "__main__":
    main()
