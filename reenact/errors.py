"""The one error hierarchy: every error that means "the user gave us something wrong" is a :class:`ReenactError`.

Entry points catch ``USER_ERRORS`` and report such an error as one line with exit status 2, never a traceback.
Each subclass also keeps the built-in base it had (``ValueError``, ``KeyError``...), so callers that catch those
still work.
"""

from __future__ import annotations


class ReenactError(Exception):
    """Base of every user-facing error: a bad config value, checkpoint, input file, family name..."""


def _optional(module: str, name: str) -> tuple[type[BaseException], ...]:
    try:
        mod = __import__(module, fromlist=[name])
        return (getattr(mod, name),)
    except (ImportError, AttributeError):
        return ()


# Hydra wraps a constructor's own error (a ReenactError or a ValueError from a bad config value) in
# InstantiationException; a missing file is a user error whoever raises it.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ReenactError,
    FileNotFoundError,
    *_optional("hydra.errors", "InstantiationException"),
)
