"""The exceptions that mean "the user gave us something wrong": reported as one line, never a traceback."""

from __future__ import annotations

from reenact.checkpoints import CheckpointError
from reenact.utils.config_check import ConfigError
from reenact.utils.finite import NonFiniteError


def _optional(module: str, name: str) -> tuple[type[BaseException], ...]:
    try:
        mod = __import__(module, fromlist=[name])
        return (getattr(mod, name),)
    except (ImportError, AttributeError):
        return ()


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    NonFiniteError,  # a diverged run: named in one line, the last finite checkpoint kept
    FileNotFoundError,
    *_optional("reenact.data.datasets", "DatasetError"),
    *_optional("reenact.data.video", "VideoError"),
    *_optional("hydra.errors", "InstantiationException"),
    *_optional("reenact.animation.errors", "AnimationInputError"),
)
