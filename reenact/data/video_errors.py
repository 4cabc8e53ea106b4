"""The error that video reading and writing raise for a file that cannot be used as a video.

Both :mod:`reenact.data.video` (reading) and :mod:`reenact.data.video_writer` (writing) import it from here, so
neither module imports the other.
"""

from __future__ import annotations

from pathlib import Path

from reenact.errors import ReenactError


class VideoError(ReenactError):
    """A file or folder that cannot be read as a video; the message names it and says why."""


def video_error(path: str | Path, reason: object) -> VideoError:
    """A one-line VideoError for ``path``: the first line of ``reason`` (or its type's name when it is blank)."""
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return VideoError(f"corrupt or unreadable video: {path} ({text})")
