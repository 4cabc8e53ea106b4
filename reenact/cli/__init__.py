"""reenact's command lines, one module each, and the one way they report a user's mistake.

=====================  ==================================  ===========================
module                 ``python -m``                       console script
=====================  ==================================  ===========================
:mod:`.train`          ``python train.py``                 ``reenact-train``
:mod:`.evaluate`       ``python -m reenact.evaluate``      ``reenact-evaluate``
:mod:`.animate`        ``python -m reenact.animate``       ``reenact-animate``
:mod:`.prepare`        ``python -m reenact.prepare``       ``reenact-prepare``
:mod:`.convert`        ``python -m reenact.convert``       ``reenact-convert``
:mod:`.info`           ``python -m reenact.info``          ``reenact-info``
:mod:`.warp`           ``python -m reenact.warp``          ``reenact-warp``
:mod:`.export`         ``python -m reenact.export``        ``reenact-export``
=====================  ==================================  ===========================

Each command runs its work inside :func:`user_errors`: an error that means "the user gave us something wrong" (a
:class:`reenact.errors.ReenactError`; see ``reenact.errors.USER_ERRORS``) is printed as one line,
``error: <what is wrong>``, on stderr and the process exits with status 2, never with a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from reenact.errors import USER_ERRORS
from reenact.utils.config_check import ConfigError
from reenact.utils.messages import first_line, one_line

EXIT_USER_ERROR = 2


class user_errors(AbstractContextManager):  # noqa: N801 (used as ``with user_errors():``, like a function)
    """Report a user error raised inside the block as one line on stderr, ``error: ...``, and exit with status 2.

    ``describe`` turns the error into that line (by default its first line, with wrappers such as Hydra's
    InstantiationException removed); ``on_error`` runs first (e.g. to remove a run folder the failed start made);
    ``also`` names further errors that mean a user mistake for this command (an unwritable output path). With
    ``exit=False`` the error is reported and swallowed and :attr:`status` is 2, for a ``main(argv) -> int``
    that returns its exit status::

        with user_errors(exit=False) as reported:
            report = run(argv)
        if reported.status:
            return reported.status
    """

    def __init__(
        self,
        describe: Callable[[BaseException], str] = one_line,
        on_error: Callable[[], None] | None = None,
        also: tuple[type[BaseException], ...] = (),
        exit: bool = True,
    ) -> None:
        self.describe, self.on_error, self.also, self.exit = describe, on_error, also, exit
        self.status = 0

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if error is None or not isinstance(error, (*USER_ERRORS, *self.also)):
            return False
        if self.on_error is not None:
            self.on_error()
        print(f"error: {self.describe(error)}", file=sys.stderr)
        self.status = EXIT_USER_ERROR
        if self.exit:
            sys.exit(EXIT_USER_ERROR)
        return True


def check_override_syntax(argv: Sequence[str]) -> None:
    """An override Hydra's grammar cannot parse (a path with a space, unquoted) as one line, exit status 2, instead
    of Hydra's five-line block (:func:`reenact.utils.hydra_utils.override_syntax_error` says how to quote it)."""
    from reenact.utils.hydra_utils import override_syntax_error

    with user_errors(first_line):
        message = override_syntax_error(argv)
        if message is not None:
            raise ConfigError(message)


def with_override_check(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``@hydra.main`` function so that run as a command it checks the overrides first
    (:func:`check_override_syntax`)."""

    @functools.wraps(hydra_main)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:  # called as a command (the console script or ``python -m``)
            check_override_syntax(sys.argv[1:])
        return hydra_main(*args, **kwargs)

    return checked
