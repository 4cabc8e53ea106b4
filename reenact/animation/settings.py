"""The one list of animation settings, read by the command line, the Python API, the web of entry points built on
them, and export.

:class:`AnimationSettings` holds what changes the rendered frames (the motion-transfer mode and the family's own
transfer options, the reference frame, batching, precision, how many frames); :class:`AnimationOptions` in
:mod:`reenact.animation.video_job` extends it with what only a file-to-file job has (cropping, paste-back, the
side-by-side video, the encoder's quality).

A family declares its transfer modes (``transfer_modes``, the first being its default) and its own options with
their defaults (``transfer_options``); :meth:`AnimationSettings.check` refuses, in one line, a mode or an option the
family does not have. ``relative=True/False``, the older spelling, maps to ``transfer="relative"/"absolute"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reenact.animation.errors import AnimationInputError

PRECISIONS = ("fp32", "bf16")
REFERENCE_CHOICES = ("first", "best")
BEST_FRAME_METHODS = ("keypoints", "landmarks")


def transfer_from_relative(relative: bool | None) -> str | None:
    """The transfer mode the older ``relative`` flag names (None: not given)."""
    if relative is None:
        return None
    return "relative" if bool(relative) else "absolute"


@dataclass(frozen=True)
class AnimationSettings:
    """How driving motion becomes rendered frames, for any family."""

    transfer: str | None = None  # a mode of the family's transfer_modes; None: the family's default (its first)
    transfer_options: Mapping[str, Any] = field(default_factory=dict)  # the family's own options (transfer_options)
    reference_frame: int | str = "first"  # first | best (pose closest to the source) | a frame index
    best_frame_by: str = "keypoints"  # "best" judged by the model's keypoints, or by 68 dlib landmarks (FOMM demo)
    batch_size: int = 16  # driving frames per network call
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    max_frames: int | None = None  # animate only the first N driving frames
    progress: bool = True

    def __post_init__(self) -> None:
        reference = self.reference_frame
        if reference not in REFERENCE_CHOICES and not (isinstance(reference, int) and not isinstance(reference, bool)):
            raise AnimationInputError(f"reference_frame={reference!r}; choose first, best or a frame index")
        if self.best_frame_by not in BEST_FRAME_METHODS:
            raise AnimationInputError(
                f"best_frame_by={self.best_frame_by!r}; choose {' or '.join(BEST_FRAME_METHODS)}")
        if self.precision not in PRECISIONS:
            raise AnimationInputError(f"precision={self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise AnimationInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise AnimationInputError(f"max_frames={self.max_frames}; give a positive number of frames or null")
        object.__setattr__(self, "transfer_options", dict(self.transfer_options))

    def check(self, family: Any) -> tuple[str, dict[str, Any]]:
        """The transfer mode and the options (defaults filled in) for a family class or network; a mode or an
        option it lacks is refused in one line (:class:`reenact.families.base.TransferModeError`)."""
        return family.check_transfer(self.transfer, dict(self.transfer_options))

    def replace(self, **changes: Any) -> AnimationSettings:
        return dataclasses.replace(self, **changes)


def settings_fields(settings_class: type = AnimationSettings) -> tuple[str, ...]:
    """The names of a settings dataclass's fields (what a config or a page may set)."""
    return tuple(f.name for f in dataclasses.fields(settings_class))
