"""The one LightningModule of reenact: trains any model family with manual optimisation.

The model preset decides the networks (``network``: FOMM or the LivePortrait family, both exposing
``forward(source, driving)``, ``detect``, ``optimizer_groups`` and ``keypoints_2d``), the generator-side
``objective`` and whether a ``discriminator`` is built. Per step (as the original FOMM loop): one generator
forward and backward, then one Adam step per network group (e.g. keypoint detector, generator); then, when the GAN
is on, one discriminator step on detached predictions. Learning rates fall by ``lr_gamma`` at the epoch
``lr_milestones`` (``lr_schedule: multistep``, the original recipe) or along one half cosine to 0 over
``trainer.max_epochs`` (``lr_schedule: cosine``), or over ``lr_schedule_epochs`` when that is set and
shorter: the run then ends with its schedule, since more epochs at a learning rate of 0 change nothing.
Validation reconstructs each held-out video from its first frame and logs ``val/l1`` beside
``val/l1_copy_source`` (the error of just showing the source frame) so anyone can see whether motion transfers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from reenact.losses.adversarial import (
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from reenact.losses.objective import ReenactmentObjective
from reenact.models.geometry import resize_to
from reenact.utils.memory_format import to_channels_last

log = logging.getLogger(__name__)

DISCRIMINATOR = "discriminator"


class ReenactmentTask(LightningModule):
    def __init__(
        self,
        network: nn.Module,
        objective: ReenactmentObjective,
        discriminator: Callable[[], nn.Module] | None = None,
        gan_kind: str = "lsgan",
        generator_gan: float = 0.0,
        discriminator_gan: float = 1.0,
        feature_matching: list[float] = (10.0, 10.0, 10.0, 10.0),
        lr: dict[str, float] | None = None,
        betas: list[float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        lr_schedule: str = "multistep",
        lr_milestones: list[int] = (),
        lr_gamma: float = 0.1,
        lr_schedule_epochs: int | None = None,
        grad_clip_val: float | None = None,
        grad_clip_algorithm: str = "norm",
        val_chunk_frames: int = 16,
        precise_bn_batches: int = 0,
        init_from: str | None = None,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.network = network
        self.objective = objective
        self.gan_kind = gan_kind
        self.generator_gan = generator_gan
        self.discriminator_gan = discriminator_gan
        self.feature_matching = list(feature_matching)
        # The discriminator only exists when the generator is trained against it: with generator_gan == 0
        # (FOMM's vox-256 stage) it would be dead weight, and DDP would see unused parameters.
        self.discriminator = discriminator() if (discriminator is not None and generator_gan > 0) else None
        groups = list(network.optimizer_groups())
        self.optimizer_names = groups + ([DISCRIMINATOR] if self.discriminator is not None else [])
        lr = dict(lr or {})
        missing = [name for name in self.optimizer_names if name not in lr]
        unknown = [name for name in lr if name not in self.optimizer_names and name != DISCRIMINATOR]
        if missing or unknown:
            raise ValueError(
                f"model.lr must give one learning rate per optimised network {self.optimizer_names}; "
                f"missing {missing}, unknown {unknown}"
            )
        if lr_schedule not in ("multistep", "cosine"):
            raise ValueError(f"model.lr_schedule: unknown schedule '{lr_schedule}' (expected 'multistep' or 'cosine')")
        if lr_schedule_epochs is not None and not _is_int_at_least(lr_schedule_epochs, 1):
            raise ValueError(f"model.lr_schedule_epochs must be a positive integer or null, got {lr_schedule_epochs!r}")
        if gan_kind not in ("lsgan", "hinge"):
            raise ValueError(f"model.gan_kind: unknown GAN loss '{gan_kind}' (expected 'lsgan' or 'hinge')")
        self.lr = lr
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.lr_milestones = list(lr_milestones)
        self.lr_gamma = lr_gamma
        self.lr_schedule_epochs = lr_schedule_epochs
        self.grad_clip_val = grad_clip_val
        self.grad_clip_algorithm = grad_clip_algorithm
        self.val_chunk_frames = val_chunk_frames
        if not _is_int_at_least(precise_bn_batches, 0):
            raise ValueError(f"model.precise_bn_batches must be a non-negative integer, got {precise_bn_batches!r}")
        self.precise_bn_batches = precise_bn_batches
        self.init_from = init_from
        self.channels_last = channels_last
        self.seed = seed
        # Filled by the entry point so that a checkpoint can rebuild its model without the Hydra tree.
        self.model_config: dict[str, Any] | None = None
        self.data_config: dict[str, Any] | None = None
        # global step of the last validation (None before the first): the entry point validates the final weights
        # when training stopped between validation epochs (time cap, schedule end)
        self.validated_at_step: int | None = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        params = dict(self.network.optimizer_groups())
        if self.discriminator is not None:
            params[DISCRIMINATOR] = list(self.discriminator.parameters())
        optimizers = [
            torch.optim.Adam(params[name], lr=self.lr[name], betas=self.betas, weight_decay=self.weight_decay)
            for name in self.optimizer_names
        ]
        if self.lr_schedule == "cosine":
            # A closure is not saved in the scheduler's state_dict: the curve's length is read live (see below).
            def cosine(epoch: int) -> float:
                return self._cosine_factor(epoch)

            schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, cosine) for opt in optimizers]
        else:
            schedulers = [
                torch.optim.lr_scheduler.MultiStepLR(opt, milestones=self.lr_milestones, gamma=self.lr_gamma)
                for opt in optimizers
            ]
        return optimizers, schedulers

    def _schedule_length(self) -> int:
        """Epochs of the cosine: trainer.max_epochs, or lr_schedule_epochs when that is shorter."""
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        lengths = [n for n in (max_epochs, self.lr_schedule_epochs) if n is not None and n > 0]
        return max(1, min(lengths)) if lengths else 1

    def _cosine_factor(self, epoch: int) -> float:
        """One half cosine from 1 to 0 over the schedule's length."""
        total = self._schedule_length()
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total) / total))

    def on_train_epoch_start(self) -> None:
        if self.lr_schedule != "cosine":
            return
        # The learning rate is a function of the epoch: set it from the curve, so a run resumed from a checkpoint
        # follows the uninterrupted run's curve, and one resumed with a larger max_epochs stretches the curve.
        schedulers = self.lr_schedulers()
        optimizers = self.optimizers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for scheduler, optimizer in zip(schedulers, optimizers, strict=True):
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base * self._cosine_factor(self.current_epoch)

    def _step_seed(self, batch_idx: int) -> int:
        # Randomness inside a step (the equivariance transform) depends only on (seed, rank, epoch, batch), so a
        # run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn.
        return (self.seed * 1_000_003 + self.global_rank * 7919 + self.current_epoch * 100_003 + batch_idx) % 2**63

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        by_name = dict(zip(self.optimizer_names, optimizers, strict=True))
        source, driving = batch["source"], batch["driving"]
        devices = [source.device] if source.device.type == "cuda" else []

        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._step_seed(batch_idx))
            output = self.network(source, driving)
            losses, _ = self.objective(self.network, batch, output)

        kp_driving_2d = self.network.keypoints_2d(output["kp_driving"]).detach()
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
            driving = resize_to(driving, tuple(output["prediction"].shape[-2:]))
            fake = self.discriminator(output["prediction"], kp_driving_2d)
            losses["generator_gan"] = self.generator_gan * generator_adversarial_loss(
                [pred for _, pred in fake], self.gan_kind
            )
            if any(self.feature_matching):
                with torch.no_grad():
                    real = self.discriminator(driving, kp_driving_2d)
                losses["feature_matching"] = feature_matching_loss(
                    [feats for feats, _ in real], [feats for feats, _ in fake], self.feature_matching
                )
            self.discriminator.requires_grad_(True)

        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite generator loss at epoch {self.current_epoch} batch {batch_idx}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            )
        for name in self.optimizer_names:
            if name != DISCRIMINATOR:
                by_name[name].zero_grad(set_to_none=True)
        self.manual_backward(total)
        for name in self.optimizer_names:
            if name != DISCRIMINATOR:
                self._clip_and_step(by_name[name])

        logged = {f"train/{k}": v.detach() for k, v in losses.items()}
        if self.discriminator is not None:
            d_opt = by_name[DISCRIMINATOR]
            d_opt.zero_grad(set_to_none=True)
            real = self.discriminator(driving, kp_driving_2d)
            fake = self.discriminator(output["prediction"].detach(), kp_driving_2d)
            d_loss = self.discriminator_gan * discriminator_adversarial_loss(
                [pred for _, pred in real], [pred for _, pred in fake], self.gan_kind
            )
            self.manual_backward(d_loss)
            self._clip_and_step(d_opt)
            logged["train/discriminator_gan"] = d_loss.detach()
        batch_size = source.shape[0]
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    def _clip_and_step(self, optimizer: Any) -> None:
        if self.grad_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip_val,
                                gradient_clip_algorithm=self.grad_clip_algorithm)
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        if (
            self.lr_schedule == "cosine"
            and self.lr_schedule_epochs is not None
            and self.current_epoch + 1 >= self._schedule_length()
            and not self.trainer.should_stop
        ):
            log.info("the cosine schedule ends at epoch %d (model.lr_schedule_epochs): stopping",
                     self.current_epoch + 1)
            self.trainer.should_stop = True
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def reconstruct_video(self, video: torch.Tensor) -> torch.Tensor:
        """Frame 0 drives nothing: it is the source, and every frame t is reconstructed from (source, frame t).

        video: (T, 3, H, W) in [0, 1] -> prediction (T, 3, H, W).
        """
        source = video[:1]
        predictions = []
        for start in range(0, video.shape[0], self.val_chunk_frames):
            driving = video[start : start + self.val_chunk_frames]
            output = self.network(source.expand(driving.shape[0], -1, -1, -1), driving)
            predictions.append(output["prediction"].clamp(0, 1))
        return torch.cat(predictions)

    def on_validation_start(self) -> None:
        if self.precise_bn_batches and not self.trainer.sanity_checking:
            self.recompute_batchnorm_statistics(self.precise_bn_batches)

    @torch.no_grad()
    def recompute_batchnorm_statistics(self, num_batches: int) -> int:
        """PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): replace every BatchNorm's running
        statistics with plain averages over ``num_batches`` training batches under the current weights.

        The running averages kept during training (momentum 0.1, batches of 8 here) follow the last few batches, and
        validating with them moved val/l1 by up to 3% between otherwise converged epochs (measured on
        liveportrait_small). Only the statistics change: every other module runs in eval mode (no spectral-norm power
        iterations). Under DDP the ranks' averages are averaged. Returns the number of batches used.
        """
        norms = [m for m in self.network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        datamodule = getattr(self.trainer, "datamodule", None)
        if not norms or datamodule is None:
            return 0
        momenta = [m.momentum for m in norms]
        was_training = self.network.training
        self.network.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
            m.train()
        seen = 0
        try:
            with self.trainer.precision_plugin.forward_context():
                for batch in datamodule.train_dataloader():
                    if seen == num_batches:
                        break
                    self.network(batch["source"].to(self.device), batch["driving"].to(self.device))
                    seen += 1
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.network.train(was_training)
        if self.trainer.world_size > 1:
            for m in norms:
                m.running_mean.copy_(self.trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                m.running_var.copy_(self.trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        return seen

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        video = batch["video"][0]  # (T, 3, H, W): the val loader yields one video per batch
        prediction = self.reconstruct_video(video)
        video = resize_to(video, tuple(prediction.shape[-2:]))
        l1 = (prediction - video).abs().mean()
        copy_source = (video[:1] - video).abs().mean()
        self.log_dict({"val/l1": l1, "val/l1_copy_source": copy_source}, on_step=False, on_epoch=True,
                      batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step

    # ------------------------------------------------------------------ checkpoints
    def setup(self, stage: str) -> None:
        if self.channels_last:  # before the optimisers exist; the Parameter objects stay the same anyway
            to_channels_last(self.network)
            if self.discriminator is not None:
                to_channels_last(self.discriminator)

    def on_fit_start(self) -> None:
        if self.init_from and self.trainer.ckpt_path is None:
            self._initialise_from(self.init_from)

    def _initialise_from(self, path: str) -> None:
        """Start from another run's (or a converted release's) weights; optimiser state starts fresh.

        The discriminator is taken too when the checkpoint has one of the same architecture; otherwise a new one is
        trained, as FOMM's vox-256 -> vox-adv-256 stage does.
        """
        from reenact.api import CheckpointError, load_module_weights, read_checkpoint

        checkpoint = read_checkpoint(path)
        load_module_weights(self.network, checkpoint, "network.", path)
        message = "initialised the network from %s"
        if self.discriminator is not None:
            try:
                load_module_weights(self.discriminator, checkpoint, "discriminator.", path)
                message += " (discriminator too)"
            except CheckpointError:
                message += " (new discriminator: the checkpoint has none of this architecture)"
        log.info(message, path)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["reenact"] = {
            "family": getattr(self.network, "family", "unknown"),
            "model_config": self.model_config,
            "data_config": self.data_config,
        }


def _is_int_at_least(value: Any, minimum: int) -> bool:
    """An int (not a bool, which is one in Python) no smaller than ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
