"""Animation: drive a portrait with a video (face cropping, relative/absolute motion, batched rendering).

    python -m reenact.animate ckpt_path=CKPT source=portrait.jpg driving=talk.mp4 output=out.mp4

Modules: ``motion`` (keypoint motion transfer for both model families, best reference frame),
``cropping`` (face crops of the source and the driving video, paste-back), ``pipeline`` (tensors in,
frames out: batching, bf16 autocast, progress bar), ``video_job`` (files in, an mp4 out) and ``outputs``
(output paths, the side-by-side video). Importing this
package is cheap; the heavy modules load when used.
"""

from __future__ import annotations

from reenact.animation.errors import AnimationInputError, NoFaceError

__all__ = ["AnimationInputError", "NoFaceError"]
