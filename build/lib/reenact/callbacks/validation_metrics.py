"""Optional: the cheap evaluation subset (LPIPS, AKD, MKR on a few frames) during validation, every N epochs.

The task already logs ``val/l1`` and ``val/l1_copy_source`` on every validation video. This callback adds
``val/lpips``, ``val/akd`` and ``val/mkr`` from the first ``num_videos`` validation videos: ``num_frames``
evenly spaced frames of each (frame 0, the source, always among them) are reconstructed from frame 0 with
``reconstruct_video`` and scored together, so each value is frame-weighted over the subset. A tool that is
not available (no LPIPS backbone offline, no dlib) is switched off with one warning; frames where dlib finds
no face simply give no AKD (and MKR counts only frames whose ground truth has a face), so ``val/akd`` or
``val/mkr`` is not logged in an epoch where none of the scored frames qualifies.

Enable it with ``python train.py 'callbacks=[default,validation_metrics]'`` (see the YAML for experiments).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from reenact.layers.geometry import resize_to
from reenact.metrics.validation import ValidationMetrics, evenly_spaced

log = logging.getLogger(__name__)

LOGGED_METRICS = ("lpips", "akd", "mkr")  # val/l1 comes from the task itself, on all validation videos


class ValidationMetricsCallback(Callback):
    def __init__(
        self,
        every_n_epochs: int = 5,
        num_videos: int = 2,
        num_frames: int = 8,
        lpips: bool = True,
        lpips_backbone_weights: str | None = None,
        lpips_pnet_rand: bool = False,
        landmark_backend: str | None = "dlib",
    ) -> None:
        for key, value in (("every_n_epochs", every_n_epochs), ("num_videos", num_videos), ("num_frames", num_frames)):
            if int(value) < 1:
                raise ValueError(f"callbacks.validation_metrics.{key} must be >= 1, got {value}")
        self.every_n_epochs = int(every_n_epochs)
        self.num_videos = int(num_videos)
        self.num_frames = int(num_frames)
        self.lpips = lpips
        self.lpips_backbone_weights = lpips_backbone_weights
        self.lpips_pnet_rand = lpips_pnet_rand
        self.landmark_backend = landmark_backend
        self.metrics: ValidationMetrics | None = None
        self.last_values: dict[str, float] = {}

    def _metrics(self, device: torch.device) -> ValidationMetrics:
        # Built on first use, on the module's device, so that LPIPS runs where the model runs.
        if self.metrics is None:
            self.metrics = ValidationMetrics(
                use_lpips=self.lpips,
                lpips_backbone_weights=self.lpips_backbone_weights,
                lpips_pnet_rand=self.lpips_pnet_rand,
                landmark_backend=self.landmark_backend,
                num_frames=self.num_frames * self.num_videos,  # every gathered frame is scored
                device=str(device),
            )
        return self.metrics

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if trainer.global_rank != 0:  # every rank would score the same videos; rank 0 logs (rank_zero_only)
            return
        dataset = _validation_dataset(trainer)
        if dataset is None or len(dataset) == 0:
            return
        predictions, targets = self.reconstruct(pl_module, dataset)
        values = self._metrics(pl_module.device)(predictions, targets)
        self.last_values = {f"val/{k}": v for k, v in values.items() if k in LOGGED_METRICS}
        for key, value in self.last_values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, batch_size=1, rank_zero_only=True)

    @torch.no_grad()
    def reconstruct(self, pl_module: LightningModule, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen frames of the first ``num_videos`` videos: (predictions, targets), (N, 3, H', W') each."""
        network = pl_module.network
        was_training = network.training
        network.eval()
        dtype = next(pl_module.parameters()).dtype  # bf16-true runs keep bf16 weights
        predictions, targets = [], []
        try:
            for index in range(min(self.num_videos, len(dataset))):
                video = dataset[index]["video"]  # (T, 3, H, W) in [0, 1]
                chosen = video[evenly_spaced(video.shape[0], self.num_frames)]  # (n, 3, H, W); frame 0 first
                chosen = chosen.to(pl_module.device, dtype)
                prediction = pl_module.reconstruct_video(chosen).float()  # (n, 3, H', W'), each from frame 0
                predictions.append(prediction)
                targets.append(resize_to(chosen.float(), tuple(prediction.shape[-2:])))
        finally:
            network.train(was_training)
        return torch.cat(predictions), torch.cat(targets)


def _validation_dataset(trainer: Trainer) -> Any:
    loaders = trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    return getattr(loader, "dataset", None)
