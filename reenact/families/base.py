"""The contract between reenact's shared code and a model family, and the registry of families.

A *family* is one way of moving a face (FOMM's 2D keypoints with Jacobians, LivePortrait's 3D keypoint volume
warp, ...). The training task, the loss terms, animation, evaluation, export and conversion only ever talk to a
family through :class:`ReenactmentFamily`; none of them compares family names or looks for family-specific keys.

What a family provides:

- ``forward(source, driving)`` and ``training_forward(batch)``: the reconstruction of the driving frame, a
  :class:`ModelOutput`. ``training_forward`` is what the task calls; a family that uses several source images per
  sample, or anything else from the batch, overrides it. ``set_progress(step, epoch)`` is called before every
  training step for behaviour that depends on training progress.
- ``encode_motion(frames)``: the family's :data:`Motion` of a batch of frames (keypoints, pose, a motion
  code...); ``compact_motion`` keeps the entries animation stores per driving frame; ``render(source,
  source_motion, driving_motion)`` renders the source moved to the given motion.
- ``transfer_modes`` and ``transfer_motion(..., mode, **options)``: the motion that makes the source follow a driving
  frame, by one of the family's modes (``absolute``, ``relative`` to a reference driving frame, or a family's own);
  ``transfer_options`` declares the family's own options with their defaults. Callers go through :meth:`transfer`,
  which checks the mode and the options in one line. ``best_reference_frame``: the driving frame whose pose is
  closest to the source's.
- ``motion_smoothing(motion)``: how each motion entry is filtered over time when animation asks for steady motion
  (``smooth=``): linear, as a rotation, as an angle, or not at all (default: every float entry linear).
- Two animation facts a transfer may depend on, each asked for by the family: a ``paste_back`` entry in
  ``transfer_options`` (:data:`PASTE_BACK_OPTION`) receives file-to-file animation's own paste-back setting (whether
  the rendered crop goes back into the full source image; LivePortrait stitches then); and when
  ``transfer_needs_landmarks(options)`` is True, animation adds ``landmarks`` (B, 68, 2) -- the iBUG-68 points of the
  source and of every driving frame, in normalised [-1, 1] coordinates of the crop, NaN where no face was found --
  to the motions it passes to :meth:`transfer` (and only there: the renderer never sees them).
- ``keypoints_2d(motion)``: (B, K, 2) points in normalised [-1, 1] coordinates for drawing and for a
  keypoint-conditioned discriminator, or ``None`` for a family without keypoints (then nothing draws or conditions
  on them). ``equivariance_keypoints(motion)``: the points (and optional Jacobians) the shared equivariance terms
  compare.
- ``may_skip_parameters``: some parameters get no gradient in some steps by design; with
  :func:`parameters_may_go_unused` it tells the training strategy to search for unused parameters.
- ``renders_2d_flow``: ``deformation`` is a 2D flow (B, h, w, 2) that ``reenact.warp`` can draw.
- ``optimizer_groups()``: the parameters of each optimiser group, a partition of the family's parameters.
- ``parameter_report()``: the networks ``python -m reenact.info`` lists with their parameter counts.
- ``converter``: optionally, the function importing a published release (see :mod:`reenact.convert`).
- Several source images of one person: ``max_sources`` says how many one prediction can use (1 by default; None: any
  number). ``forward_sources(sources (B, S, 3, H, W), driving)`` and ``render_sources(sources, source_motions (S
  motions of batch B), driving_motion)`` are the several-source forms of ``forward`` and ``render``; the defaults
  take one source and refuse more with :class:`SeveralSourcesError` (one line). A training batch may carry
  ``sources`` (B, S, 3, H, W) beside ``source`` (= ``sources[:, 0]``); the default ``training_forward`` passes it on.
- ``encode_source(source)`` and ``render_encoded(encoding, source_motion, driving_motion)``: rendering split into
  what depends on the source image alone (computed once per source) and the rest, for exported inference
  (:mod:`reenact.export`). The defaults keep the source image as its encoding and call ``render``.
  ``export_unsupported`` names, in one line, the operator that keeps a family from being exported to ONNX (None
  when it can be).

Families register themselves with :func:`register_family` under the name that configs (``model.family``) and
checkpoints carry. The registry finds them without a list: the first lookup imports every package under
``reenact/families/`` and every entry point of the ``reenact.families`` group (installed packages outside reenact).
Helpers on a motion (slicing, joining, moving) are in :mod:`reenact.families.motion`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, NotRequired, TypedDict

import torch
from torch import nn

from reenact.errors import ReenactError
from reenact.utils.messages import first_line

# A family's motion of a batch of B frames: named tensors, each with the batch as its first dimension
# (keypoints (B, K, 2|3), Jacobians, angles, a latent motion code...). What the names are is the family's business.
Motion = dict[str, torch.Tensor]


class ModelOutput(TypedDict):
    """What a family's forward returns. Only ``prediction`` is required; loss terms declare which other keys they
    read and fail with one line naming the family when a key they need is missing."""

    prediction: torch.Tensor  # (B, 3, H', W') in [0, 1]; H' = H or a multiple of it
    motion_source: NotRequired[Motion | None]  # the source frames' motion
    motion_driving: NotRequired[Motion | None]  # the motion the prediction was rendered with
    deformation: NotRequired[torch.Tensor | None]  # flow (B, h, w, 2) or volume flow (B, D, h, w, 3)
    occlusion_map: NotRequired[torch.Tensor | None]  # (B, 1, h, w) in [0, 1]
    deformed: NotRequired[torch.Tensor | None]  # (B, 3, H, W): the source warped by the model's own flow


class ReenactmentFamily(nn.Module):
    """Base class of every family's top-level network (see the module docstring for the contract)."""

    family: ClassVar[str] = ""
    # "module:function" importing a published release: function(source, out, preset=, overrides=, frame_size=)
    # writes a checkpoint and returns a report (see reenact.convert); None when the family has none
    converter: ClassVar[str | None] = None
    # the preset the converter builds by default (the release's sizes)
    converter_preset: ClassVar[str | None] = None
    # why this family cannot be exported to ONNX, naming the operator (one line); None when it can
    export_unsupported: ClassVar[str | None] = None
    # how many source images of one person one prediction can use; None: any number
    max_sources: ClassVar[int | None] = 1
    # the motion-transfer modes the family offers; the first is its default
    transfer_modes: ClassVar[tuple[str, ...]] = ("absolute",)
    # the family's own options of transfer_motion, with their defaults
    transfer_options: ClassVar[dict[str, Any]] = {}
    # some parameters get no gradient in some steps by design (a network used in one mode or stage only)
    may_skip_parameters: ClassVar[bool] = False
    # ``deformation`` is a 2D flow (B, h, w, 2) in normalised source coordinates
    renders_2d_flow: ClassVar[bool] = False

    # ------------------------------------------------------------------ training
    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        """source, driving: (B, 3, H, W) in [0, 1] -> the reconstruction of ``driving`` from ``source``, with
        ``motion_source`` and ``motion_driving``. The default encodes each frame's motion in its own pass (one
        concatenated batch would mix the two frames' BatchNorm statistics) and renders."""
        if source.shape != driving.shape:
            raise ValueError(f"source {tuple(source.shape)} and driving {tuple(driving.shape)} shapes differ")
        motion_source = self.encode_motion(source)
        motion_driving = self.encode_motion(driving)
        output = self.render(source, motion_source, motion_driving)
        output["motion_source"] = motion_source
        output["motion_driving"] = motion_driving
        return output

    def training_forward(self, batch: dict[str, Any]) -> ModelOutput:
        """The task's forward on a training batch; the default reconstructs ``driving`` from ``source``, or from
        ``sources`` (B, S, 3, H, W) when the batch holds several source frames per sample."""
        sources = batch.get("sources")
        if sources is not None and sources.shape[1] > 1:
            return self.forward_sources(sources, batch["driving"])
        return self(batch["source"], batch["driving"])

    def check_sources(self, count: int) -> None:
        """Refuse, in one line, a number of source images this family cannot use."""
        if count < 1:
            raise SeveralSourcesError(f"at least one source image is needed, got {count}")
        if self.max_sources is not None and count > self.max_sources:
            raise SeveralSourcesError(
                f"the {self.family!r} family renders from at most {self.max_sources} source image"
                f"{'s' if self.max_sources > 1 else ''}; got {count}"
            )

    def forward_sources(self, sources: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        """sources (B, S, 3, H, W), driving (B, 3, H, W) -> the reconstruction of ``driving`` from all S sources
        (``motion_source``: the first source's motion). The default takes S = 1 only."""
        self.check_sources(sources.shape[1])
        return self(sources[:, 0], driving)

    def set_progress(self, step: int, epoch: int) -> None:
        """Called before every training step; families whose behaviour follows training progress override it."""

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimiser group; together the groups hold every trainable parameter exactly once."""
        return {"generator": list(self.parameters())}

    # ------------------------------------------------------------------ motion and rendering
    def encode_motion(self, frames: torch.Tensor) -> Motion:
        """frames (B, 3, H, W) in [0, 1] -> their motion (differentiable: loss terms use it too)."""
        raise NotImplementedError

    def compact_motion(self, motion: Motion) -> Motion:
        """The entries animation stores per driving frame, detached float32 (autocast may give bf16)."""
        return {k: v.detach().float() for k, v in motion.items()}

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """source (B, 3, H, W) with its motion -> the source moved to ``driving_motion`` (batch B each)."""
        raise NotImplementedError

    def render_sources(
        self, sources: torch.Tensor, source_motions: list[Motion], driving_motion: Motion
    ) -> ModelOutput:
        """sources (B, S, 3, H, W), one motion of batch B per source -> the person moved to ``driving_motion``,
        drawing on every source. The default takes S = 1 only."""
        self.check_sources(sources.shape[1])
        return self.render(sources[:, 0], source_motions[0], driving_motion)

    def encode_source(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        """What rendering needs of source images (B, 3, H, W), computed once per source: named tensors with the
        batch first (feature maps, the image itself...). The default keeps the image."""
        return {"image": source}

    def render_encoded(
        self, encoding: dict[str, torch.Tensor], source_motion: Motion, driving_motion: Motion
    ) -> torch.Tensor:
        """The prediction (B, 3, H', W') for :meth:`encode_source`'s output; equals ``render``'s prediction."""
        return self.render(encoding["image"], source_motion, driving_motion)["prediction"]

    def transfer(
        self,
        source_motion: Motion,
        driving_motion: Motion,
        reference_motion: Motion,
        mode: str | None = None,
        **options: Any,
    ) -> Motion:
        """:meth:`transfer_motion` by ``mode`` (None: the family's default), after :meth:`check_transfer` and with
        the family's option defaults filled in. What every caller (animation, export, evaluation) uses."""
        mode, options = self.check_transfer(mode, options)
        return self.transfer_motion(source_motion, driving_motion, reference_motion, mode, **options)

    @classmethod
    def check_transfer(cls, mode: str | None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """The mode (None: the default) and the options with their defaults; an unknown mode or option is refused
        with :class:`TransferModeError` in one line."""
        mode = cls.transfer_modes[0] if mode is None else str(mode)
        if mode not in cls.transfer_modes:
            modes = " | ".join(cls.transfer_modes)
            raise TransferModeError(f"the {cls.family!r} family transfers motion by {modes}; got transfer={mode!r}")
        unknown = sorted(set(options or {}) - set(cls.transfer_options))
        if unknown:
            offered = ", ".join(sorted(cls.transfer_options)) or "none"
            raise TransferModeError(
                f"the {cls.family!r} family has no transfer option {', '.join(map(repr, unknown))} (it has: {offered})")
        return mode, {**cls.transfer_options, **(options or {})}

    def transfer_motion(
        self, source_motion: Motion, driving_motion: Motion, reference_motion: Motion, mode: str, **options: Any
    ) -> Motion:
        """The motion that makes the source (batch 1) follow each driving frame (batch B) by ``mode``, one of
        :attr:`transfer_modes` (checked by :meth:`transfer`), with the family's ``options``.

        The base handles ``absolute``: the driving frames' motion as it is. Families override it for their other
        modes (``relative``: the source moves as the driving face moved since the reference frame, batch 1).
        """
        if mode != "absolute":
            raise TransferModeError(f"the {self.family!r} family implements no transfer mode {mode!r}")
        return driving_motion

    def motion_smoothing(self, motion: Motion) -> dict[str, str]:
        """How ``smooth=`` filters each entry of this family's (compact) motion over time
        (:mod:`reenact.animation.smoothing`): ``"linear"`` (each number on its own), ``"rotation"`` ((..., 3, 3)
        rotation matrices, kept rotations), ``"angle"`` (angles in degrees, filtered on the circle) or ``"none"``
        (left as it is). Default: every floating-point entry linear."""
        return {key: "linear" if value.is_floating_point() else "none" for key, value in motion.items()}

    def transfer_needs_landmarks(self, options: Mapping[str, Any]) -> bool:
        """Whether :meth:`transfer` with these options (defaults filled in) reads ``landmarks`` entries of the
        motions (see the module docstring); False by default."""
        return False

    def best_reference_frame(self, source_motion: Motion, driving_motion: Motion) -> int:
        """Index of the driving frame (of T in ``driving_motion``) whose pose is closest to the source's (batch 1).
        The default compares the 2D keypoints; families without keypoints return 0."""
        from reenact.utils.constellation import closest_constellation

        source_points, driving_points = self.keypoints_2d(source_motion), self.keypoints_2d(driving_motion)
        if source_points is None or driving_points is None:
            return 0
        return closest_constellation(source_points[0].float().cpu().numpy(), driving_points.float().cpu().numpy())

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        """(B, K, 2) points in normalised [-1, 1] (x, y) coordinates, or None for a family without keypoints."""
        return None

    def equivariance_keypoints(self, motion: Motion) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """What the shared equivariance terms compare: (B, K, 2) points in [-1, 1] and, where the family has them,
        (B, K, 2, 2) Jacobians (else None); None for a family without 2D keypoints. Default: ``keypoints_2d``."""
        points = self.keypoints_2d(motion)
        return None if points is None else (points, None)

    def parameter_report(self) -> list[tuple[str, nn.Module]]:
        """The sub-networks worth a parameter count of their own (default: the direct children)."""
        return list(self.named_children())


# ---------------------------------------------------------------------------------------------- registry
_FAMILIES: dict[str, type[ReenactmentFamily]] = {}
# The entry-point group through which an installed package outside reenact adds families: each entry names a module
# (or an object in it) whose import registers them, e.g. in the package's pyproject.toml
#     [project.entry-points."reenact.families"]
#     tpsmm = "my_package.tpsmm"
ENTRY_POINT_GROUP = "reenact.families"
_discovered = False


class SeveralSourcesError(ReenactError, ValueError):
    """More source images than a family can use (one, for most families)."""


# The transfer option that file-to-file animation fills with its paste-back setting, for a family that declares it.
PASTE_BACK_OPTION = "paste_back"


class TransferModeError(ReenactError, ValueError):
    """A motion-transfer mode or option the family does not have."""


def parameters_may_go_unused(network: ReenactmentFamily, groups: Mapping[str, Any], has_discriminator: bool) -> bool:
    """Whether some parameters can get no gradient in a training step, so that DDP must search for unused ones:
    the family says so (``may_skip_parameters``), a group is frozen or starts after epoch 0 (``groups``: the
    ``model.groups`` settings, name -> mapping with ``frozen`` / ``start_epoch``), or a discriminator trains beside
    the family."""
    if network.may_skip_parameters or has_discriminator:
        return True
    for settings in groups.values():
        if isinstance(settings, Mapping):
            frozen, start_epoch = settings.get("frozen", False), settings.get("start_epoch", 0)
        else:  # an options object with attributes
            frozen, start_epoch = getattr(settings, "frozen", False), getattr(settings, "start_epoch", 0)
        if bool(frozen) or int(start_epoch or 0) > 0:
            return True
    return False


class UnknownFamilyError(ReenactError, KeyError):
    """A family name that no registered family carries."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model family"


def register_family(cls: type[ReenactmentFamily]) -> type[ReenactmentFamily]:
    """Class decorator: makes ``cls`` known under ``cls.family``. Registering a different class under a name
    already taken is an error; re-registering the same class (a module reloaded) is not."""
    name = cls.family
    if not name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty class attribute 'family'")
    existing = _FAMILIES.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"model family {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    _FAMILIES[name] = cls
    return cls


class FamilyPluginError(ReenactError, ImportError):
    """A family package (built in, or named by an installed package's entry point) that fails to import."""


def builtin_family_modules() -> list[str]:
    """Every package under ``reenact/families/``: each one is a family (the folder is the whole registration)."""
    here = Path(__file__).parent
    return [f"{__package__}.{info.name}" for info in pkgutil.iter_modules([str(here)]) if info.ispkg]


def _discover_families() -> None:
    """Import the built-in family packages and every ``reenact.families`` entry point, once per process; each
    family registers itself when its module is imported."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in builtin_family_modules():
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken outside package: one line naming it, not a traceback from deep inside
            raise FamilyPluginError(
                f"the model family plug-in {entry.name!r} ({entry.value}, entry-point group {ENTRY_POINT_GROUP!r}) "
                f"failed to import: {type(exc).__name__}: {first_line(exc)}"
            ) from exc


def get_family(name: str) -> type[ReenactmentFamily]:
    """The registered family class called ``name``."""
    _discover_families()
    if name not in _FAMILIES:
        raise UnknownFamilyError(f"unknown model family {name!r}; registered: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def registered_families() -> dict[str, type[ReenactmentFamily]]:
    """Every registered family by name: the packages under ``reenact/families/``, those that installed packages
    name in the ``reenact.families`` entry-point group, and any registered since by importing its module."""
    _discover_families()
    return dict(sorted(_FAMILIES.items()))


def family_of(network: nn.Module) -> str:
    """The family name of a network instance (its class attribute ``family``)."""
    if not isinstance(network, ReenactmentFamily):
        raise TypeError(f"{type(network).__qualname__} is not a ReenactmentFamily")
    return network.family
