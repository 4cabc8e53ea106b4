"""The one LightningModule of reenact: trains any model family with manual optimisation.

The model preset decides the ``network`` (a :class:`reenact.families.base.ReenactmentFamily`), the generator
``objective`` (weighted loss terms, :mod:`reenact.losses.terms`) and the ``discriminator``, which is built only when
a listed term needs one. The task knows families only through that contract. Per step (as the original FOMM loop):
one generator forward and backward, then one Adam step per optimiser group the family names (e.g. keypoint detector,
generator); then, with a discriminator, one discriminator step on detached predictions. ``channels_last`` stores the
networks channels-last and ``compile`` compiles each of them with ``torch.compile`` (both off by default; measured in
experiments/2026-12-01_performance.md).

Optimisation is staged per group: each group's optimiser and learning-rate scheduler are built from ``_partial_``
nodes (``optimizer``, ``scheduler``; ``groups.<name>.optimizer`` / ``.scheduler`` override them for one group) with
the group's rate from ``lr.<name>``. ``groups.<name>`` also sets ``start_epoch`` (the group trains from that epoch
on), ``frozen`` (never trains: a second stage with the rest fixed) and ``grad_clip`` / ``grad_clip_norm_type``
(gradient-norm clipping). A group the config does not list trains with the defaults (from epoch 0, no clipping).
Schedulers step once per epoch.
Validation reconstructs each held-out video from its first frame and logs ``val/l1`` beside
``val/l1_copy_source`` (the error of just showing the source frame) so anyone can see whether motion transfers. A
family that renders from several source images (``max_sources`` > 1 or None) also logs ``val/l1_two_sources``: every
frame reconstructed from the first and the middle frame together.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from reenact.families.base import ReenactmentFamily
from reenact.layers.geometry import resize_to
from reenact.losses.adversarial import GAN_KINDS, discriminator_adversarial_loss
from reenact.losses.terms import LossContext, Objective
from reenact.tasks.schedules import EpochSchedule
from reenact.utils.finite import NonFiniteError
from reenact.utils.memory_format import to_channels_last
from reenact.utils.nnpack import use_nnpack

log = logging.getLogger(__name__)

DISCRIMINATOR = "discriminator"


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
        network_groups = list(network.optimizer_groups())
        self.optimizer_names = network_groups + ([DISCRIMINATOR] if self.discriminator is not None else [])
        lr = dict(lr or {})
        frozen_groups = {name for name, options in (groups or {}).items() if (options or {}).get("frozen", False)}
        missing = [name for name in self.optimizer_names if name not in lr and name not in frozen_groups]
        unknown = [name for name in lr if name not in self.optimizer_names and name != DISCRIMINATOR]
        if missing or unknown:
            raise ValueError(
                f"model.lr must give one learning rate per optimised network {self.optimizer_names}; "
                f"missing {missing}, unknown {unknown}"
            )
        self.group_options = {
            name: GroupOptions.from_config(name, options)
            for name, options in _group_configs(groups, self.optimizer_names).items()
        }
        if gan_kind not in GAN_KINDS:
            raise ValueError(f"model.gan_kind: unknown GAN loss '{gan_kind}' (expected 'lsgan' or 'hinge')")
        self.lr = lr
        self.optimizer_factory = optimizer or functools.partial(torch.optim.Adam, betas=(0.5, 0.999))
        self.scheduler_factory = scheduler
        self._check_factories()
        self.val_chunk_frames = val_chunk_frames
        if not _is_int_at_least(precise_bn_batches, 0):
            raise ValueError(f"model.precise_bn_batches must be a non-negative integer, got {precise_bn_batches!r}")
        self.precise_bn_batches = precise_bn_batches
        self.init_from = init_from
        self.channels_last = channels_last
        if not isinstance(nnpack, bool):
            raise ValueError(f"model.nnpack must be true or false, got {nnpack!r}")
        self.nnpack = nnpack
        if not isinstance(compile, bool):
            raise ValueError(f"model.compile must be true or false, got {compile!r}")
        self.compile_networks = compile
        self.seed = seed
        self.model_config = model_config
        self.data_config = data_config
        num_sources = (data_config or {}).get("num_sources", 1)
        if isinstance(num_sources, int) and num_sources > 1:
            network.check_sources(num_sources)  # one line when the family renders from one source only
        # global step of the last validation (None before the first): the entry point validates the final weights
        # when training stopped between validation epochs (time cap, schedule end)
        self.validated_at_step: int | None = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        params = dict(self.network.optimizer_groups())
        if self.discriminator is not None:
            params[DISCRIMINATOR] = list(self.discriminator.parameters())
        optimizers, schedulers = [], []
        for name in self.optimizer_names:
            options = self.group_options[name]
            if options.frozen:
                for parameter in params[name]:
                    parameter.requires_grad_(False)  # no gradients computed for it at all
            make_optimizer = options.optimizer or self.optimizer_factory
            optimizer = make_optimizer(params[name], lr=self.lr.get(name, 0.0))  # a frozen group needs no rate
            optimizers.append(optimizer)
            make_scheduler = options.scheduler or self.scheduler_factory
            if make_scheduler is not None:
                schedulers.append(make_scheduler(optimizer))
        if schedulers and len(schedulers) != len(optimizers):
            raise ValueError("model.scheduler: give every optimiser group a scheduler, or none")
        return optimizers, schedulers

    def _check_factories(self) -> None:
        """Build every configured optimiser and scheduler once on a throwaway parameter, so that a bad value
        (an unknown schedule kind, a wrong argument) stops the run at start-up, not when fitting begins."""
        for name, options in self.group_options.items():
            probe = torch.nn.Parameter(torch.zeros(1))
            optimizer = (options.optimizer or self.optimizer_factory)([probe], lr=self.lr.get(name, 0.0))
            make_scheduler = options.scheduler or self.scheduler_factory
            if make_scheduler is not None:
                make_scheduler(optimizer)

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def on_train_epoch_start(self) -> None:
        # Closed-form schedules set the rate from the curve, so a run resumed from a checkpoint follows the
        # uninterrupted run's curve (and one resumed with a longer schedule stretches it).
        for scheduler in self._schedulers():
            if isinstance(scheduler, EpochSchedule):
                scheduler.apply(self.current_epoch)

    def _step_seed(self, batch_idx: int) -> int:
        # Randomness inside a step (the equivariance transform) depends only on (seed, rank, epoch, batch), so a
        # run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn.
        return (self.seed * 1_000_003 + self.global_rank * 7919 + self.current_epoch * 100_003 + batch_idx) % 2**63

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        by_name = dict(zip(self.optimizer_names, optimizers, strict=True))
        source = batch["source"]
        devices = [source.device] if source.device.type == "cuda" else []

        for module in self.frozen_modules():  # Lightning switches the whole task to train mode between epochs
            module.eval()
        self.network.set_progress(self.global_step, self.current_epoch)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._step_seed(batch_idx))
            output = self.network.training_forward(batch)
            context = LossContext(self.network, batch, output, self.discriminator, self.gan_kind)
            losses = self.objective(context)

        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            # FiniteModelCheckpoint writes nothing on this error (the forward pass may already have put NaN into
            # BatchNorm statistics), so last.ckpt remains the last finite state. Only the offending terms are named.
            bad = {k: v for k, v in losses.items() if not torch.isfinite(v).all()} or losses
            raise NonFiniteError(
                f"non-finite loss at epoch {self.current_epoch} batch {batch_idx}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in bad.items())
            )
        generator_groups = [name for name in self.optimizer_names if name != DISCRIMINATOR]
        for name in generator_groups:
            by_name[name].zero_grad(set_to_none=True)
        self.manual_backward(total)
        for name in generator_groups:
            self._clip_and_step(name, by_name[name])

        logged = {f"train/{k}": v.detach() for k, v in losses.items()}
        if self.discriminator is not None:
            d_opt = by_name[DISCRIMINATOR]
            d_opt.zero_grad(set_to_none=True)
            condition = context.discriminator_condition()
            real = self.discriminator(context.target, condition)
            fake = self.discriminator(output["prediction"].detach(), condition)
            d_loss = self.discriminator_gan * discriminator_adversarial_loss(
                [pred for _, pred in real], [pred for _, pred in fake], self.gan_kind
            )
            self.manual_backward(d_loss)
            self._clip_and_step(DISCRIMINATOR, d_opt)
            logged["train/discriminator_gan"] = d_loss.detach()
        batch_size = source.shape[0]
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    def frozen_modules(self) -> list[torch.nn.Module]:
        """The largest sub-modules of the network whose parameters all belong to frozen groups: they stay in eval
        mode, so their BatchNorm statistics do not change either."""
        frozen = {id(p) for name, params in self.network.optimizer_groups().items()
                  if self.group_options[name].frozen for p in params}
        if not frozen:
            return []
        found: list[torch.nn.Module] = []

        def visit(module: torch.nn.Module) -> None:
            own = [id(p) for p in module.parameters()]
            if own and all(p in frozen for p in own):
                found.append(module)
                return
            for child in module.children():
                visit(child)

        visit(self.network)
        return found

    def _clip_and_step(self, name: str, optimizer: Any) -> None:
        """Step one group's optimiser unless the group is frozen or starts later; clip its gradients first."""
        options = self.group_options[name]
        if options.frozen or self.current_epoch < options.start_epoch:
            optimizer.zero_grad(set_to_none=True)  # its gradients of this step are discarded, not accumulated
            return
        if options.grad_clip:
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            if scaler is not None:  # fp16 mixed precision: clip the true gradients
                scaler.unscale_(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, options.grad_clip, norm_type=options.grad_clip_norm_type)
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        schedulers = self._schedulers()
        if (
            any(isinstance(s, EpochSchedule) and s.ends_training(self.current_epoch) for s in schedulers)
            and not self.trainer.should_stop
        ):
            log.info("the learning-rate schedule ends at epoch %d: stopping", self.current_epoch + 1)
            self.trainer.should_stop = True
        for scheduler in schedulers:
            scheduler.step()

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def reconstruct_video(self, video: torch.Tensor, source_frames: tuple[int, ...] = (0,)) -> torch.Tensor:
        """Every frame t is reconstructed from (the source frames, frame t); by default frame 0 is the one source.

        video: (T, 3, H, W) in [0, 1] -> prediction (T, 3, H, W).
        """
        sources = video[list(source_frames)][None]  # (1, S, 3, H, W)
        predictions = []
        for start in range(0, video.shape[0], self.val_chunk_frames):
            driving = video[start : start + self.val_chunk_frames]
            batch = driving.shape[0]
            if sources.shape[1] == 1:
                output = self.network(sources[:, 0].expand(batch, -1, -1, -1), driving)
            else:
                output = self.network.forward_sources(sources.expand(batch, -1, -1, -1, -1), driving)
            predictions.append(output["prediction"].clamp(0, 1))
        return torch.cat(predictions)

    @property
    def validates_two_sources(self) -> bool:
        """Whether validation also reconstructs from two sources (the family renders from several)."""
        return self.network.max_sources is None or self.network.max_sources >= 2

    def configure_callbacks(self) -> list[Any]:
        """PreciseBN (``precise_bn_batches`` > 0) is part of a recipe, so the model preset switches it on."""
        from reenact.callbacks.precise_bn import PreciseBatchNorm

        return [PreciseBatchNorm(self.precise_bn_batches)] if self.precise_bn_batches else []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        video = batch["video"][0]  # (T, 3, H, W): the val loader yields one video per batch
        prediction = self.reconstruct_video(video)
        video = resize_to(video, tuple(prediction.shape[-2:]))
        l1 = (prediction - video).abs().mean()
        copy_source = (video[:1] - video).abs().mean()
        logged = {"val/l1": l1, "val/l1_copy_source": copy_source}
        if self.validates_two_sources and video.shape[0] >= 2:  # the first and the middle frame
            two = self.reconstruct_video(batch["video"][0], (0, video.shape[0] // 2))
            logged["val/l1_two_sources"] = (two - video).abs().mean()
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step

    # ------------------------------------------------------------------ checkpoints
    def setup(self, stage: str) -> None:
        if self.channels_last:  # before the optimisers exist; the Parameter objects stay the same anyway
            to_channels_last(self.network)
            if self.discriminator is not None:
                to_channels_last(self.discriminator)
        if self.nnpack:  # after channels-last: a channels-last layer keeps its own forward
            use_nnpack(self)
        if self.compile_networks:
            for module in self.compiled_modules():
                module.compile()  # in place: state_dict keys, checkpoints and optimisers are unchanged

    def compiled_modules(self) -> list[nn.Module]:
        """What ``compile=true`` compiles: each network of the family (its direct children), the discriminator and the
        objective's frozen feature extractors. Each is compiled on its own, so the task's Python (loss terms, motion
        dicts, the equivariance transform's double backward) stays eager."""
        modules = [child for child in self.network.children() if any(True for _ in child.parameters())]
        if self.discriminator is not None:
            modules.append(self.discriminator)
        modules += self.objective.feature_extractors()
        return modules

    def on_fit_start(self) -> None:
        if self.init_from and self.trainer.ckpt_path is None:
            self._initialise_from(self.init_from)

    def _initialise_from(self, path: str) -> None:
        """Start from another run's (or a converted release's) weights; optimiser state starts fresh.

        The discriminator is taken too when the checkpoint has one of the same architecture; otherwise a new one is
        trained, as FOMM's vox-256 -> vox-adv-256 stage does.
        """
        from reenact.checkpoints import CheckpointError, load_module_weights, read_checkpoint

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
            "family": self.network.family,
            "model_config": self.model_config,
            "data_config": self.data_config,
        }


@dataclass(frozen=True)
class GroupOptions:
    """How one optimiser group trains (see the module docstring)."""

    start_epoch: int = 0
    frozen: bool = False
    grad_clip: float | None = None
    grad_clip_norm_type: float = 2.0
    optimizer: Callable[..., torch.optim.Optimizer] | None = None
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None

    @classmethod
    def from_config(cls, name: str, options: dict[str, Any]) -> GroupOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"model.groups.{name}: unknown option(s) {unknown}; expected some of {sorted(known)}")
        merged = {f.name: f.default for f in fields(cls)} | dict(options)
        if not _is_int_at_least(merged.get("start_epoch", 0), 0):
            raise ValueError(f"model.groups.{name}.start_epoch must be a non-negative integer")
        clip = merged["grad_clip"]
        if clip is not None and not (isinstance(clip, int | float) and clip > 0):
            raise ValueError(f"model.groups.{name}.grad_clip must be a positive number or null, got {clip!r}")
        return cls(**merged)


def _group_configs(groups: dict[str, dict[str, Any]] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """Every optimiser group's options (empty for groups the config does not mention)."""
    groups = dict(groups or {})
    unknown = [name for name in groups if name not in names and name != DISCRIMINATOR]
    if unknown:
        raise ValueError(f"model.groups names {unknown}, which are not optimiser groups of this model {names}")
    return {name: dict(groups.get(name) or {}) for name in names}


def _is_int_at_least(value: Any, minimum: int) -> bool:
    """An int (not a bool, which is one in Python) no smaller than ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
