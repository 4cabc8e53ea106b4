"""The copy-source baseline of the reconstruction protocol: show the source (frame 0) for every frame.

A model that ignores the driving frame scores exactly this, so reconstruction numbers mean something only
beside it (on slow-moving test videos even a poor model beats most published L1 values). It is training's
``val/l1_copy_source`` for the evaluation suite: the same frames, the same frame size and tools as the
model's scores, frame 0 included (exact for the baseline, as the model is scored on it too), frame-weighted
over all videos like the suite.

Only L1, LPIPS and SSIM are reported: the baseline's frame 0 is identical to the target, whose PSNR is
infinite (capped at 100 dB), which would inflate the baseline's mean PSNR by an amount that depends on the
video length. Landmark metrics are not computed for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reenact.metrics.frames import FrameSequence
from reenact.metrics.suite import MetricSuite

BASELINE_METRICS = ("l1", "lpips", "ssim")
COPY_SOURCE = "copy_source"


class CopySourceBaseline:
    """Scores frame 0 repeated against each video; per-video values go into ``suite.per_video[name]``."""

    def __init__(self, suite: MetricSuite) -> None:
        self.suite = suite
        self.names = [n for n in BASELINE_METRICS if n in suite.names]
        self._sums = dict.fromkeys(self.names, 0.0)
        self._counts = dict.fromkeys(self.names, 0)

    def score_video(self, name: str, video: torch.Tensor) -> dict[str, float | None]:
        """video: (T, 3, H, W) in [0, 1], the target the model was scored against (already scored as ``name``)."""
        if name not in self.suite.per_video:
            raise ValueError(f"video {name!r} has no model score yet; score the model first")
        source = video[:1].expand_as(video)  # (T, 3, H, W): the source shown for every frame
        true = FrameSequence.wrap(video, self.suite.frame_size)
        pred = FrameSequence.wrap(source, self.suite.frame_size)
        entry: dict[str, float | None] = {}
        for metric, values in self.suite.pixel_per_frame(pred, true, self.names).items():
            valid = values[~np.isnan(values)]
            entry[metric] = float(valid.mean()) if valid.size else None
            self._sums[metric] += float(valid.sum())
            self._counts[metric] += int(valid.size)
        self.suite.per_video[name][COPY_SOURCE] = entry
        return entry

    def overall(self) -> dict[str, float | None]:
        return {m: self._sums[m] / self._counts[m] if self._counts[m] else None for m in self.names}

    def summary(self) -> dict[str, Any]:
        return {
            "overall": self.overall(),
            "definition": "frame 0 of each test video shown for every frame, scored like the model",
        }
