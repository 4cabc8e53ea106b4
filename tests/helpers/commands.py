"""Calling a command-line ``main`` in-process."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def exit_status(main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """The status the process would exit with: what ``main`` returns, or the code of the ``SystemExit`` it raises
    (a user error is reported by :func:`reenact.cli.user_errors`, which exits with status 2)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
