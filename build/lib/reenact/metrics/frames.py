"""Video frames in either accepted layout, converted and resized on demand.

Every metric accepts a video as
- a float ``torch.Tensor`` (T, 3, H, W) with values in [0, 1] (what models output), or
- a ``uint8`` ``numpy.ndarray`` (T, H, W, 3) (what decoders return),
and, for convenience, a ``uint8`` tensor (T, 3, H, W) or a float array (T, H, W, 3) in [0, 1].

:class:`FrameSequence` wraps one video and hands out float chunks (pixel metrics) or single uint8
frames (landmark and identity metrics) at a requested square size, so long videos are never
converted to float all at once. Resizing uses antialiased bilinear interpolation for float frames and
OpenCV area/linear interpolation for uint8 frames; neither is a ``grid_sample``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F


class FrameSequence:
    """One video (T frames), optionally resized to ``size`` x ``size`` when frames are read."""

    def __init__(self, frames: torch.Tensor | np.ndarray, size: int | None = None) -> None:
        self._frames, self._channels_last = _validate(frames)
        self.size = size

    @classmethod
    def wrap(cls, video: torch.Tensor | np.ndarray | FrameSequence, size: int | None = None) -> FrameSequence:
        if isinstance(video, FrameSequence):
            return video if size is None or video.size == size else cls(video._frames, size)
        return cls(video, size)

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    @property
    def native_hw(self) -> tuple[int, int]:
        shape = self._frames.shape
        return (int(shape[1]), int(shape[2])) if self._channels_last else (int(shape[2]), int(shape[3]))

    @property
    def hw(self) -> tuple[int, int]:
        """Height and width of the frames this sequence hands out."""
        return (self.size, self.size) if self.size is not None else self.native_hw

    def float_chunk(self, start: int, stop: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Frames [start, stop) as float32 (n, 3, h, w) in [0, 1] on ``device``."""
        chunk = self._frames[start:stop]
        if self._channels_last:
            tensor = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2)
        else:
            tensor = chunk
        tensor = tensor.to(device)
        tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
        if self.size is not None and tuple(tensor.shape[-2:]) != (self.size, self.size):
            tensor = F.interpolate(
                tensor, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
        return tensor

    def float_chunks(self, batch_size: int, device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        for start in range(0, len(self), batch_size):
            yield self.float_chunk(start, min(start + batch_size, len(self)), device)

    def uint8_frame(self, index: int, size: int | None = None) -> np.ndarray:
        """Frame ``index`` as a contiguous uint8 (h, w, 3) RGB array, at ``size`` (default: self.size)."""
        size = self.size if size is None else size
        frame = self._frames[index]
        if self._channels_last:
            image = np.asarray(frame)
            if image.dtype != np.uint8:
                image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        else:
            tensor = frame.detach().cpu()
            if tensor.dtype != torch.uint8:
                if size is not None and tuple(tensor.shape[-2:]) != (size, size):
                    # resize in float before quantising, as float_chunk does
                    tensor = F.interpolate(
                        tensor[None].float(),
                        size=(size, size),
                        mode="bilinear",
                        align_corners=False,
                        antialias=True,
                    )[0]
                tensor = (tensor.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
            image = tensor.permute(1, 2, 0).numpy()
        if size is not None and image.shape[:2] != (size, size):
            image = _resize_uint8(image, size)
        return np.ascontiguousarray(image)

    def uint8_frames(self, size: int | None = None) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self.uint8_frame(index, size)


def as_float_frames(video: torch.Tensor | np.ndarray | FrameSequence, size: int | None = None) -> torch.Tensor:
    """The whole video as float32 (T, 3, H, W) in [0, 1] (for short clips and tests)."""
    sequence = FrameSequence.wrap(video, size)
    return sequence.float_chunk(0, len(sequence))


def check_same_length(prediction: FrameSequence, target: FrameSequence) -> None:
    if len(prediction) != len(target):
        raise ValueError(f"prediction has {len(prediction)} frames but target has {len(target)}")
    if prediction.hw != target.hw:
        raise ValueError(
            f"prediction frames are {prediction.hw} but target frames are {target.hw}; "
            "set a common frame_size to resize both"
        )


def _resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    import cv2  # imported lazily: only landmark and identity metrics resize uint8 frames

    shrinking = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _validate(frames: torch.Tensor | np.ndarray) -> tuple[torch.Tensor | np.ndarray, bool]:
    """Checks the layout and returns (frames, channels_last)."""
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"a video tensor must be (T, 3, H, W), got shape {tuple(frames.shape)}")
        if frames.dtype != torch.uint8 and not frames.is_floating_point():
            raise ValueError(f"a video tensor must be float in [0, 1] or uint8, got dtype {frames.dtype}")
        return frames.detach(), False
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"a video array must be (T, H, W, 3), got shape {frames.shape}")
        if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"a video array must be uint8 or float in [0, 1], got dtype {frames.dtype}")
        return frames, True
    raise TypeError(f"a video must be a torch.Tensor or numpy.ndarray, got {type(frames).__name__}")


Video: TypeAlias = torch.Tensor | np.ndarray | FrameSequence
"""Any accepted video: float (T, 3, H, W) tensor in [0, 1], uint8 (T, H, W, 3) array, or a FrameSequence."""
