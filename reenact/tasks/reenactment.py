"""The one LightningModule of reenact: trains any model family, through the contract of
:class:`reenact.families.base.ReenactmentFamily`, with manual optimisation.

The model preset gives the ``network``, the generator ``objective`` (weighted loss terms) and the ``discriminator``,
built only when a listed term needs one. Per step: one generator forward and backward, one step per trained optimiser
group (:mod:`reenact.tasks.optimisation`), then, with a discriminator, one discriminator step on detached predictions.
Validation: :mod:`reenact.tasks.validation`; speed switches: :mod:`reenact.utils.performance`; ``init_from``:
:func:`reenact.checkpoints.initialise_from`. PreciseBN (``precise_bn_batches``) is added by the training entry point.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from reenact.checkpoints import initialise_from
from reenact.families.base import ReenactmentFamily
from reenact.losses.adversarial import GAN_KINDS, discriminator_step_loss
from reenact.losses.terms import LossContext, Objective, finite_total
from reenact.tasks.optimisation import (
    DISCRIMINATOR,
    OptimiserGroups,
    apply_epoch_schedules,
    as_list,
    frozen_modules,
    is_int_at_least,
    step_schedules,
)
from reenact.tasks.validation import reconstruct_video, validation_errors
from reenact.utils.performance import PerformanceSettings

log = logging.getLogger(__name__)


class ReenactmentTask(LightningModule):
    def __init__(
        self,
        network: ReenactmentFamily,
        objective: Objective,
        discriminator: Callable[[], nn.Module] | None = None,
        gan_kind: str = "lsgan",
        discriminator_gan: float = 1.0,
        family: str | None = None,
        lr: dict[str, float] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        groups: dict[str, dict[str, Any]] | None = None,
        val_chunk_frames: int = 16,
        precise_bn_batches: int = 0,
        init_from: str | None = None,
        channels_last: bool = False,
        nnpack: bool = False,
        compile: bool = False,
        seed: int = 0,
        model_config: dict[str, Any] | None = None,
        data_config: dict[str, Any] | None = None,
    ) -> None:
        """``model_config`` (the model preset, ``network`` included) and ``data_config`` go into every checkpoint
        so that :func:`reenact.load_pretrained` can rebuild the network without the Hydra tree."""
        super().__init__()
        self.automatic_optimization = False
        self.network = network
        self.objective = objective
        if not isinstance(network, ReenactmentFamily):
            raise TypeError(f"model.network must be a ReenactmentFamily, got {type(network).__qualname__}")
        if family is not None and family != network.family:
            raise ValueError(f"model.family is {family!r} but model.network is a {network.family!r} network")
        self.gan_kind = gan_kind
        self.discriminator_gan = discriminator_gan
        # The discriminator only exists when a loss term trains the generator against it: without one (FOMM's
        # vox-256 stage) it would be dead weight, and DDP would see unused parameters.
        if objective.uses_discriminator and discriminator is None:
            raise ValueError("model.objective lists an adversarial term but model.discriminator is null")
        self.discriminator = discriminator() if objective.uses_discriminator else None
        if gan_kind not in GAN_KINDS:
            raise ValueError(f"model.gan_kind: unknown GAN loss '{gan_kind}' (expected 'lsgan' or 'hinge')")
        params = dict(network.optimizer_groups())
        if self.discriminator is not None:
            params[DISCRIMINATOR] = list(self.discriminator.parameters())
        self.groups = OptimiserGroups(params, lr, groups, optimizer, scheduler)
        # kept in eval mode from now on (see train()): their BatchNorm statistics stay as they are
        self.frozen_modules = frozen_modules(self, self.groups.frozen_parameters())
        self.train(self.training)
        self.val_chunk_frames = val_chunk_frames
        if not is_int_at_least(precise_bn_batches, 0):
            raise ValueError(f"model.precise_bn_batches must be a non-negative integer, got {precise_bn_batches!r}")
        self.precise_bn_batches = precise_bn_batches
        self.init_from = init_from
        self.performance = PerformanceSettings(channels_last, nnpack, compile)
        self.seed = seed
        self.model_config = model_config
        self.data_config = data_config
        num_sources = (data_config or {}).get("num_sources", 1)
        if isinstance(num_sources, int) and num_sources > 1:
            network.check_sources(num_sources)  # one line when the family renders from one source only
        # the step of the last validation: the entry point validates the final weights when training stopped between
        # validation epochs (time cap, schedule end)
        self.validated_at_step: int | None = None

    @property
    def optimizer_names(self) -> list[str]:
        return self.groups.names  # the family's groups, then ``discriminator`` when one is built

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        return self.groups.build()

    def train(self, mode: bool = True) -> ReenactmentTask:
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        apply_epoch_schedules(as_list(self.lr_schedulers()), self.current_epoch)

    @property
    def training_step_index(self) -> int:
        """How many training steps (batches) came before this one, counted over the whole run (resumes too)."""
        return self.trainer.fit_loop.epoch_loop._batches_that_stepped

    def _step_seed(self, batch_idx: int) -> int:
        # Randomness inside a step (the equivariance transform) depends only on (seed, rank, epoch, batch), so a
        # run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn.
        return (self.seed * 1_000_003 + self.global_rank * 7919 + self.current_epoch * 100_003 + batch_idx) % 2**63

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        by_name = dict(zip(self.groups.trained, as_list(self.optimizers()), strict=True))
        source = batch["source"]
        devices = [source.device] if source.device.type == "cuda" else []
        self.network.set_progress(self.training_step_index, self.current_epoch)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._step_seed(batch_idx))
            output = self.network.training_forward(batch)
            context = LossContext(self.network, batch, output, self.discriminator, self.gan_kind)
            losses = self.objective(context)

        total = finite_total(losses, f"epoch {self.current_epoch} batch {batch_idx}")
        generator_groups = [name for name in self.groups.trained if name != DISCRIMINATOR]
        for name in generator_groups:
            by_name[name].zero_grad(set_to_none=True)
        self.manual_backward(total)
        for name in generator_groups:
            self._clip_and_step(name, by_name[name])
        logged = {f"train/{k}": v.detach() for k, v in losses.items()}
        if DISCRIMINATOR in by_name:  # a discriminator that is built and not frozen
            by_name[DISCRIMINATOR].zero_grad(set_to_none=True)
            d_loss = self.discriminator_gan * discriminator_step_loss(context)
            self.manual_backward(d_loss)
            self._clip_and_step(DISCRIMINATOR, by_name[DISCRIMINATOR])
            logged["train/discriminator_gan"] = d_loss.detach()
        batch_size = source.shape[0]
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    def _clip_and_step(self, name: str, optimizer: Any) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 mixed precision
        self.groups.clip_and_step(name, optimizer, self.current_epoch, scaler)

    def on_train_epoch_end(self) -> None:
        if step_schedules(as_list(self.lr_schedulers()), self.current_epoch) and not self.trainer.should_stop:
            log.info("the learning-rate schedule ends at epoch %d: stopping", self.current_epoch + 1)
            self.trainer.should_stop = True

    def reconstruct_video(self, video: torch.Tensor, source_frames: tuple[int, ...] = (0,)) -> torch.Tensor:
        """video (T, 3, H, W) in [0, 1] -> each frame reconstructed from ``source_frames`` (T, 3, H', W')."""
        return reconstruct_video(self.network, video, self.val_chunk_frames, source_frames)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        errors = validation_errors(self.network, batch["video"][0], self.val_chunk_frames)  # one video per batch
        self.log_dict(errors, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step

    def setup(self, stage: str) -> None:
        networks = [self.network] + ([self.discriminator] if self.discriminator is not None else [])
        self.performance.apply(networks, [self], self.compiled_modules())

    def compiled_modules(self) -> list[nn.Module]:
        """What ``compile=true`` compiles, each on its own (the task's Python stays eager): the family's networks (its
        direct children), the discriminator and the objective's frozen feature extractors."""
        modules = [child for child in self.network.children() if any(True for _ in child.parameters())]
        if self.discriminator is not None:
            modules.append(self.discriminator)
        return modules + self.objective.feature_extractors()

    def on_fit_start(self) -> None:
        if self.init_from and self.trainer.ckpt_path is None:  # a resumed run has its own weights
            log.info(initialise_from(self.network, self.discriminator, self.init_from))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = {"family": self.network.family, "model_config": self.model_config, "data_config": self.data_config}
        checkpoint["reenact"] = meta
