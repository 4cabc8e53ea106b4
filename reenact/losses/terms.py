"""Losses as weighted terms: the generator objective is an ordered set of :class:`LossTerm` s from the config.

    objective:
      _target_: reenact.losses.terms.Objective
      terms:
        reconstruction_l1: {_target_: reenact.losses.photometric.PyramidL1, weight: 100.0, scales: [1.0]}
        equivariance: {_target_: reenact.losses.equivariance.KeypointEquivariance, weight: 10.0}

A term is off when it is not listed (a preset built on another removes an inherited term by setting it to
``null``). Each term computes an unweighted value from a :class:`LossContext` (the network, the batch, the
network's output and, for adversarial terms, the discriminator) and returns it multiplied by its ``weight``;
a term with parts (one per side, say) returns ``{part: value}``, logged as ``<name>_<part>``. A term declares the
output keys it reads (``reads``) so that a family missing one fails at start-up with one line, not deep in a step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from reenact.layers.geometry import resize_to
from reenact.utils.config_check import ConfigError
from reenact.utils.finite import NonFiniteError


class ObjectiveError(ConfigError):
    """A listed loss term that cannot work with the family it trains (an output or keypoints it lacks): the preset
    lists a term that does not fit its family."""


class LossContext:
    """Everything a term may read for one training step, with results that several terms share computed once.

    ``discriminator`` is the task's discriminator (None when no term needs one); its outputs on the prediction
    and on the real frame are computed on first use, the prediction's first, and reused by every term.
    """

    def __init__(
        self,
        network: nn.Module,
        batch: Mapping[str, Any],
        output: Mapping[str, Any],
        discriminator: nn.Module | None = None,
        gan_kind: str = "lsgan",
    ) -> None:
        self.network = network
        self.batch = batch
        self.output = output
        self.discriminator = discriminator
        self.gan_kind = gan_kind
        self.visuals: dict[str, torch.Tensor] = {}
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per step under ``key``; later calls return the first result."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def has_shared(self, key: str) -> bool:
        return key in self._shared

    @property
    def prediction(self) -> torch.Tensor:
        return self.output["prediction"]  # (B, 3, H', W')

    @property
    def target(self) -> torch.Tensor:
        """The driving frame at the prediction's size (H' may be a multiple of H), (B, 3, H', W')."""
        return self.shared("target", lambda: resize_to(self.batch["driving"], tuple(self.prediction.shape[-2:])))

    def discriminator_condition(self) -> torch.Tensor | None:
        """The driving keypoints (B, K, 2), detached, for a keypoint-conditioned discriminator; None without."""

        def points() -> torch.Tensor | None:
            motion = self.output.get("motion_driving")
            points_2d = self.network.keypoints_2d(motion) if motion is not None else None
            return None if points_2d is None else points_2d.detach()

        return self.shared("discriminator_condition", points)

    def discriminator_on_prediction(self) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """The discriminator's (features, prediction map) per scale for the generated frame, with gradients to
        the generator but none to the discriminator."""
        if self.discriminator is None:
            raise RuntimeError("an adversarial loss term needs the task's discriminator")

        def run() -> Any:
            flags = [p.requires_grad for p in self.discriminator.parameters()]
            self.discriminator.requires_grad_(False)
            try:
                return self.discriminator(self.prediction, self.discriminator_condition())
            finally:  # as they were: a frozen discriminator stays without gradients
                for parameter, flag in zip(self.discriminator.parameters(), flags, strict=True):
                    parameter.requires_grad_(flag)

        return self.shared("discriminator_fake", run)

    def discriminator_on_target(self) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """The discriminator's outputs for the real frame, without gradients (feature-matching targets)."""
        if self.discriminator is None:
            raise RuntimeError("an adversarial loss term needs the task's discriminator")
        self.discriminator_on_prediction()  # the prediction's pass comes first (spectral-norm state advances)

        def run() -> Any:
            with torch.no_grad():
                return self.discriminator(self.target, self.discriminator_condition())

        return self.shared("discriminator_real", run)


class LossTerm(nn.Module):
    """One weighted generator loss. Subclasses implement :meth:`compute` (the unweighted value)."""

    # output keys the term reads (checked against a family's output once, at the first step)
    reads: ClassVar[tuple[str, ...]] = ("prediction",)
    # True for terms that need the task's discriminator (the task builds one only when a term asks)
    uses_discriminator: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise TypeError(f"{type(self).__name__}: weight must be a number, got {weight!r}")
        self.weight = float(weight)

    def compute(self, context: LossContext) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def feature_extractors(self) -> list[nn.Module]:
        """The frozen networks this term runs (a perceptual term's VGG), which ``model.compile`` compiles; none by
        default."""
        return []

    def forward(self, context: LossContext) -> dict[str, torch.Tensor]:
        """``{"": weighted value}`` or ``{part: weighted value}`` for a term with parts."""
        value = self.compute(context)
        if isinstance(value, dict):
            return {part: self.weight * v for part, v in value.items()}
        return {"": self.weight * value}


class Objective(nn.Module):
    """The generator objective: the configured terms in order; returns ``{name: weighted loss}``."""

    def __init__(self, terms: Mapping[str, LossTerm | None] | None = None) -> None:
        super().__init__()
        listed = {name: term for name, term in (terms or {}).items() if term is not None}
        for name, term in listed.items():
            if not isinstance(term, LossTerm):
                raise TypeError(f"objective.terms.{name}: expected a LossTerm, got {type(term).__name__}")
        self.terms = nn.ModuleDict(listed)
        self._checked_outputs = False

    @property
    def uses_discriminator(self) -> bool:
        return any(term.uses_discriminator for term in self.terms.values())

    def check_output(self, output: Mapping[str, Any], family: str) -> None:
        """Fail with one line when a term reads an output key the family does not provide."""
        for name, term in self.terms.items():
            missing = [key for key in term.reads if output.get(key) is None]
            if missing:
                raise ObjectiveError(
                    f"objective.terms.{name} reads {', '.join(missing)}, which the {family!r} family does not output"
                )

    def feature_extractors(self) -> list[nn.Module]:
        """Every term's frozen feature networks (see :meth:`LossTerm.feature_extractors`)."""
        return [module for term in self.terms.values() for module in term.feature_extractors()]

    def forward(self, context: LossContext) -> dict[str, torch.Tensor]:
        if not self._checked_outputs:
            self.check_output(context.output, getattr(context.network, "family", type(context.network).__name__))
            self._checked_outputs = True
        losses: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            for part, value in term(context).items():
                losses[f"{name}_{part}" if part else name] = value
        return losses


def finite_total(losses: Mapping[str, torch.Tensor], where: str) -> torch.Tensor:
    """The sum of the weighted terms; a :class:`NonFiniteError` naming only the offending terms when it is NaN or
    inf. Checkpoint callbacks write nothing on this error (the forward pass may already have put NaN into BatchNorm
    statistics), so the last checkpoint remains the last finite state."""
    total = torch.stack(list(losses.values())).sum()
    if not torch.isfinite(total):
        bad = {k: v for k, v in losses.items() if not torch.isfinite(v).all()} or losses
        raise NonFiniteError(f"non-finite loss at {where}: " + ", ".join(f"{k}={v.item():.4g}" for k, v in bad.items()))
    return total
