"""PSNR and SSIM per frame (torchmetrics), on [0, 1] frames.

Not part of the FOMM protocol (see docs: later works such as face-vid2vid and LivePortrait report them
under their own protocols). SSIM uses the standard Gaussian window (11 x 11, sigma 1.5) with
data_range 1. PSNR is computed per frame and averaged over frames; identical frames would give an
infinite PSNR, so the per-frame value is capped at ``max_db`` (100 dB) to keep metrics.json valid JSON.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video, check_same_length

PSNR_CAP_DB = 100.0


def psnr_per_frame(
    prediction: Video,
    target: Video,
    max_db: float = PSNR_CAP_DB,
    batch_size: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """Per-frame PSNR in dB for data range 1, capped at ``max_db``; (T,) float32 on the CPU."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    values = []
    for pred, true in _paired_chunks(prediction, target, batch_size, device):
        psnr = peak_signal_noise_ratio(pred, true, data_range=1.0, reduction="none", dim=(1, 2, 3))
        values.append(torch.nan_to_num(psnr, posinf=max_db).clamp(max=max_db).cpu())  # (n,)
    return torch.cat(values) if values else torch.zeros(0)


def ssim_per_frame(
    prediction: Video,
    target: Video,
    batch_size: int = 32,
    device: str = "cpu",
) -> torch.Tensor:
    """Per-frame SSIM (Gaussian 11 x 11 window, sigma 1.5, data range 1); (T,) float32 on the CPU."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    values = []
    for pred, true in _paired_chunks(prediction, target, batch_size, device):
        ssim = structural_similarity_index_measure(pred, true, data_range=1.0, reduction="none")
        values.append(ssim.reshape(-1).cpu())  # (n,)
    return torch.cat(values) if values else torch.zeros(0)


def psnr(prediction: Video, target: Video) -> float:
    """Mean over frames of the per-frame PSNR (dB)."""
    return float(psnr_per_frame(prediction, target).mean())


def ssim(prediction: Video, target: Video) -> float:
    """Mean over frames of the per-frame SSIM."""
    return float(ssim_per_frame(prediction, target).mean())


def psnr_backend() -> dict[str, object]:
    return describe("torchmetrics", data_range=1.0, per_frame_cap_db=PSNR_CAP_DB)


def ssim_backend() -> dict[str, object]:
    return describe("torchmetrics", data_range=1.0, kernel="gaussian 11x11", sigma=1.5)


def _paired_chunks(
    prediction: Video, target: Video, batch_size: int, device: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    prediction, target = FrameSequence.wrap(prediction), FrameSequence.wrap(target)
    check_same_length(prediction, target)
    for start in range(0, len(prediction), batch_size):
        stop = min(start + batch_size, len(prediction))
        yield prediction.float_chunk(start, stop, device), target.float_chunk(start, stop, device)
