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

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reenact.errors import USER_ERRORS
from reenact.utils.messages import one_line

EXIT_USER_ERROR = 2


@contextmanager
def user_errors(
    describe: Callable[[BaseException], str] = one_line,
    on_error: Callable[[], None] | None = None,
    also: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Report a user error raised inside the block as one line on stderr and exit with status 2.

    ``describe`` turns the error into that line (by default its first line, with wrappers such as Hydra's
    InstantiationException removed); ``on_error`` runs first (e.g. to remove a run folder the failed start made);
    ``also`` names further errors that mean a user mistake for this command (an unwritable output path).
    """
    try:
        yield
    except (*USER_ERRORS, *also) as exc:
        if on_error is not None:
            on_error()
        print(f"error: {describe(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
