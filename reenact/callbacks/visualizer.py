"""Optional visuals: after each validation, a reconstruction grid (and, for W&B, a short video).

Grid rows, one column per sampled frame: source + keypoints, driving + keypoints, deformed source, prediction,
occlusion map. PNGs go to ``<output_dir>/images/`` and to every logger that takes images (W&B, TensorBoard).
With a W&B logger, a side-by-side clip (driving | prediction) is also encoded as H.264 mp4 next to the PNGs and
handed to W&B as that file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from reenact.utils.finite import DIVERGED_HINT, NonFiniteError, nonfinite_tensors, summarise_keys
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

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # A diverged model (the training loss can stay finite while BatchNorm's running statistics, used in eval
        # mode, are not) stops here with one line, before anything is drawn or saved; every rank takes part in
        # the decision so that none waits for another.
        bad = nonfinite_tensors(pl_module.state_dict())
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            where = summarise_keys(bad) if bad else "tensors on another rank"
            raise NonFiniteError(f"non-finite weights at epoch {trainer.current_epoch} step {trainer.global_step}: "
                                 f"{where}; not saving or drawing anything (earlier checkpoints are kept); "
                                 f"{DIVERGED_HINT}")
        if trainer.is_global_zero:
            self.draw(trainer, pl_module)

    def draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the grid (and the video) of this validation; rank 0 only."""
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

                    # wandb.Video encodes raw arrays with moviepy, which W&B does not install (it crashed the
                    # first validation); an encoded file it only copies, so encode it with our own writer.
                    video_path = self.write_video(frames, path.with_suffix(".mp4"))
                    logger.experiment.log({"val/reconstruction_video": wandb.Video(str(video_path))},
                                          step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstruction", grid, trainer.global_step, dataformats="HWC")

    @staticmethod
    def write_video(frames: np.ndarray, path: Path, fps: float = 10.0) -> Path:
        """Encode (T, H, W, 3) uint8 frames as H.264 mp4 at ``path``; odd sizes get one edge row/column repeated."""
        from reenact.data.video_writer import write_video

        # yuv420p (what browsers and W&B play) needs even width and height.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        write_video(path, frames, fps=fps)
        return path

    @staticmethod
    def frames_with_points(network: Any, images: torch.Tensor, motion: Any) -> list[np.ndarray]:
        points = network.keypoints_2d(motion) if motion is not None else None
        if points is None:
            return [to_uint8(image) for image in images]
        points = points.float().cpu().numpy()
        return [draw_keypoints(to_uint8(image), p) for image, p in zip(images, points, strict=True)]

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
            # families without keypoints (keypoints_2d -> None) get their frames without points
            rows = [self.frames_with_points(network, images, out.get(key))
                    for images, key in ((source, "motion_source"), (driving, "motion_driving"))]
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
