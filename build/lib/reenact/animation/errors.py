"""Exceptions that mean "the animation input is unusable"; each message is one line naming the file."""

from __future__ import annotations

from reenact.errors import ReenactError


class AnimationInputError(ReenactError, ValueError):
    """A source, driving video, option or output path that animation cannot use."""


class NoFaceError(AnimationInputError):
    """No face was found where one is needed for cropping (a source image or a driving video)."""
