"""What animation writes: output paths, the side-by-side frame, and a second video written from the same pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import cv2
import numpy as np

from reenact.animation.errors import AnimationInputError
from reenact.data.video_writer import write_video
from reenact.utils.visualize import draw_keypoints

SIDE_BY_SIDE_MIN_PANEL = 256


def output_paths(sources: list[Path], driving: Path, output: str | Path | None, default_dir: Path) -> list[Path]:
    """``output`` is the video for a single source, else (a folder of sources, or a folder given) a folder."""
    def name(source: Path) -> str:
        return f"{source.stem}__{driving.stem}.mp4"

    if output is None:
        return [default_dir / name(s) for s in sources]
    output = Path(output)
    if len(sources) == 1 and output.suffix.lower() == ".mp4":
        return [output]
    if len(sources) == 1 and output.suffix:
        raise AnimationInputError(f"output={output}: write an .mp4 file (or give a folder)")
    if output.suffix:
        raise AnimationInputError(f"output={output}: a folder of sources needs an output folder, not a file")
    return [output / name(s) for s in sources]


def side_by_side_frame(
    source: np.ndarray, driving: np.ndarray, result: np.ndarray, keypoints: list[np.ndarray | None]
) -> np.ndarray:
    """One frame of source | driving | result panels with their keypoints (None: a panel without points)."""
    size = max(SIDE_BY_SIDE_MIN_PANEL, result.shape[0])
    radius = max(2, size // 100)
    panels = [cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA if p.shape[0] > size else cv2.INTER_CUBIC)
              for p in (source, driving, result)]
    return np.concatenate([p if kp is None else draw_keypoints(p, kp, radius)
                           for p, kp in zip(panels, keypoints, strict=True)], axis=1)


class BackgroundWriter:
    """write_video on a thread, fed frame by frame, so two videos can be written from one pass."""

    _ABORT = object()

    def __init__(self, path: Path, fps: float, kwargs: dict[str, Any]) -> None:
        self._queue: Queue[Any] = Queue(maxsize=8)
        self.error: BaseException | None = None
        self._ended = False  # the producer's last item (None or _ABORT) has been taken from the queue
        self._thread = threading.Thread(target=self._run, args=(path, fps, kwargs), daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[np.ndarray]:
        while True:
            frame = self._queue.get()
            self._ended = frame is None or frame is self._ABORT
            if frame is None:
                return
            if frame is self._ABORT:  # write_video removes its temporary file: no truncated video appears
                raise RuntimeError("side-by-side video abandoned because the main video failed")
            yield frame

    def _run(self, path: Path, fps: float, kwargs: dict[str, Any]) -> None:
        try:
            write_video(path, self._frames(), fps, **kwargs)
        except BaseException as exc:  # reported by close(); keep draining so put() never blocks
            self.error = exc
            while not self._ended:
                item = self._queue.get()
                self._ended = item is None or item is self._ABORT

    def put(self, frame: np.ndarray) -> None:
        self._queue.put(frame)

    def close(self, abort: bool = False) -> None:
        self._queue.put(self._ABORT if abort else None)
        self._thread.join()
        if self.error is not None and not abort:
            raise self.error
