"""Official first-order-model checkpoints (``vox-cpk.pth.tar``, ``vox-adv-cpk.pth.tar``) -> reenact FOMM.

The original training loop saves one torch file holding the state dicts ``kp_detector``, ``generator`` and
``discriminator``, the optimiser states ``optimizer_kp_detector``, ``optimizer_generator`` and
``optimizer_discriminator``, and ``epoch``. Our modules use the original's names (``predictor.encoder...``,
``kp``, ``jacobian``, ``dense_motion_network...``, ``first``, ``bottleneck.r0``, ``discs.1...``), so the network
keys only gain the task's prefixes; spectral-norm keys are renamed (see :mod:`reenact.convert.keymap`); the
anti-aliasing kernels the original saves (``down.weight``) are checked equal to the ones we compute. The
optimiser states are dropped: the original steps three Adams with its own parameter order and lr schedule, which
cannot become our optimisers' state exactly, and a fine-tune starts fresh optimisers anyway.

The discriminator's variant is read from the file: spectral norm when its keys are ``weight_orig`` (vox-256),
keypoint heatmaps as extra input channels when its first conv takes more channels than the keypoint detector
(vox-adv-256). Overrides given by the caller win.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from reenact.convert.checkpoint import (
    DISCRIMINATOR,
    NETWORK,
    build_targets,
    compose_model_config,
    write_converted,
)
from reenact.convert.keymap import SPECTRAL_NORM_RENAMES, ConversionError, ConversionReport, Rename, convert_state
from reenact.convert.sources import as_state_dict, load_torch_file

FAMILY = "fomm"
DEFAULT_PRESET = "fomm_vox256"
# the release's generator has no warped-source blend (an option of reenact's CPU preset); the caller's overrides win
RELEASED_CONVENTION = ("model.network.generator.blend_warped_source=false",)
PARTS = ("kp_detector", "generator", "discriminator")
REQUIRED_PARTS = ("kp_detector", "generator")
OPTIMIZER_PREFIX = "optimizer_"
RENAMES = (
    Rename("kp_detector.", f"{NETWORK}.kp_detector."),
    Rename("generator.", f"{NETWORK}.generator."),
    Rename("discriminator.", f"{DISCRIMINATOR}."),
    *SPECTRAL_NORM_RENAMES,
)
FIRST_KP_CONV = "kp_detector.predictor.encoder.down_blocks.0.conv.weight"
FIRST_D_CONV = re.compile(r"discriminator\.discs\.[^.]+\.down_blocks\.0\.conv\.weight(_orig)?")


def flatten_fomm_checkpoint(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], list[str], Any]:
    """(tensors keyed ``<part>.<key>``, dropped top-level entries, saved epoch) of an original checkpoint."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where} is not a first-order-model checkpoint (a {type(obj).__name__}, not a dict)")
    unknown = [k for k in obj if k not in PARTS and k != "epoch" and not str(k).startswith(OPTIMIZER_PREFIX)]
    absent = [p for p in REQUIRED_PARTS if p not in obj]
    if unknown or absent:
        raise ConversionError(
            f"{where} is not a first-order-model checkpoint: missing entries {absent}, unexpected entries {unknown}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        if part in obj:
            for key, value in as_state_dict(obj[part], f"{where}[{part!r}]").items():
                tensors[f"{part}.{key}"] = value
    dropped = [k for k in obj if str(k).startswith(OPTIMIZER_PREFIX)]
    return tensors, dropped, obj.get("epoch")


def discriminator_overrides(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """``sn`` and ``use_kp`` of the saved discriminator, from the keys and width of its first conv."""
    first = sorted(k for k in tensors if FIRST_D_CONV.fullmatch(k))
    if not first or FIRST_KP_CONV not in tensors:
        return []
    image_channels = tensors[FIRST_KP_CONV].shape[1]
    use_kp = tensors[first[0]].shape[1] > image_channels
    sn = first[0].endswith("_orig")
    return [f"model.discriminator.sn={str(sn).lower()}", f"model.discriminator.use_kp={str(use_kp).lower()}"]


def convert_fomm_object(
    obj: Any, where: str, preset: str = DEFAULT_PRESET, overrides: Sequence[str] = ()
) -> tuple[dict[str, torch.Tensor], DictConfig, ConversionReport]:
    """The reenact state dict (``network.*``, ``discriminator.*``), model config and report for a loaded file."""
    tensors, dropped, epoch = flatten_fomm_checkpoint(obj, where)
    report = ConversionReport(source_format="fomm", source=where, preset=preset)
    model_cfg = compose_model_config(preset, [*RELEASED_CONVENTION, *discriminator_overrides(tensors), *overrides])
    if model_cfg.get("family") != FAMILY:
        raise ConversionError(f"preset '{preset}' is not a FOMM preset (network {model_cfg.network.get('_target_')})")
    with_discriminator = any(k.startswith("discriminator.") for k in tensors)
    targets = build_targets(model_cfg, with_discriminator)
    state = convert_state(tensors, targets, RENAMES, report)
    report.dropped = list(dropped)
    if dropped:
        report.notes.append(
            "optimiser states dropped: the original's three Adams cannot become reenact's optimiser state exactly"
        )
    if epoch is not None:
        report.notes.append(f"the source was saved at epoch {epoch}; the converted checkpoint starts at epoch 0")
    if not with_discriminator:
        report.notes.append("the source has no discriminator; a GAN fine-tune starts a new one")
    elif not any(term is not None and get_class(term._target_).uses_discriminator
                 for term in (model_cfg.objective.get("terms") or {}).values()):
        report.notes.append(
            "the discriminator is stored, but this preset lists no adversarial loss term, so training never uses it"
        )
    return state, model_cfg, report


def convert_fomm(
    source: str | Path,
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    frame_size: int = 256,
) -> ConversionReport:
    """Convert the original checkpoint file ``source`` into the reenact checkpoint ``out``."""
    source, out = Path(source), Path(out)
    state, model_cfg, report = convert_fomm_object(load_torch_file(source), str(source), preset, overrides)
    return write_converted(state, "fomm", model_cfg, frame_size, report, out,
                           [f"model={preset}", *RELEASED_CONVENTION, *overrides])
