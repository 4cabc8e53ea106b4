"""Optional visuals: after each validation, a reconstruction grid (and, for W&B, a short video).

Grid rows, one column per sampled frame: source + keypoints, driving + keypoints, deformed source, prediction,
occlusion map. PNGs go to ``<output_dir>/images/`` and to every logger that takes images (W&B, TensorBoard).
"""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from reenact.utils.visualize import draw_keypoints, make_grid, to_uint8

log = logging.getLogger(__name__)


class ReconstructionVisualizer(Callback):
    def __init__(self, output_dir: str, every_n_epochs: int = 1, num_frames: int = 4, video_frames: int = 32,
                 log_video: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.num_frames = num_frames
        self.video_frames = video_frames
        self.log_video = log_video

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list) else loaders
        if loader is None or len(loader.dataset) == 0:
            return
        video = loader.dataset[0]["video"].to(pl_module.device)  # (T, 3, H, W)
        # Only W&B takes videos: don't spend a reconstruction pass on one that nobody receives.
        wants_video = self.log_video and any(isinstance(lg, WandbLogger) for lg in trainer.loggers)
        grid, frames = self.render(pl_module, video, wants_video)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"reconstruction_epoch{trainer.current_epoch:04d}.png"
        iio.imwrite(path, grid)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/reconstruction", images=[grid], step=trainer.global_step)
                if frames is not None:
                    import wandb

                    logger.experiment.log({"val/reconstruction_video": wandb.Video(
                        frames.transpose(0, 3, 1, 2), fps=10, format="mp4")}, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstruction", grid, trainer.global_step, dataformats="HWC")

    @torch.no_grad()
    def render(
        self, pl_module: LightningModule, video: torch.Tensor, with_video: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        network = pl_module.network
        was_training = network.training
        network.eval()
        try:
            count = min(self.num_frames, video.shape[0])
            index = torch.linspace(0, video.shape[0] - 1, count).round().long()
            driving = video[index]
            source = video[:1].expand_as(driving)
            out = network(source, driving)
            kp_source = network.keypoints_2d(out["kp_source"]).cpu().numpy()
            kp_driving = network.keypoints_2d(out["kp_driving"]).cpu().numpy()
            rows = [
                [draw_keypoints(to_uint8(s), k) for s, k in zip(source, kp_source, strict=True)],
                [draw_keypoints(to_uint8(d), k) for d, k in zip(driving, kp_driving, strict=True)],
            ]
            size = driving.shape[-2:]
            for key in ("deformed", "prediction", "occlusion_map"):
                images = out.get(key)
                if images is None:
                    continue
                if images.shape[-2:] != size:
                    images = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear",
                                                             align_corners=False)
                rows.append([to_uint8(im) for im in images])
            grid = make_grid(rows)
            frames = None
            if with_video:
                clip = video[: self.video_frames]
                prediction = pl_module.reconstruct_video(clip)
                frames = np.stack([np.concatenate([to_uint8(d), to_uint8(p)], axis=1)
                                   for d, p in zip(clip, prediction, strict=True)])
            return grid, frames
        finally:
            network.train(was_training)
