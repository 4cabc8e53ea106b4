"""``python -m reenact.animate``: the command lives in :mod:`reenact.cli.animate`."""

from reenact.cli.animate import main

if __name__ == "__main__":
    main()
