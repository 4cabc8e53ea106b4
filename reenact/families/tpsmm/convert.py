"""Released TPSMM checkpoints (``vox.pth.tar``, ``taichi.pth.tar``, ``ted.pth.tar``, ``mgif.pth.tar``) -> reenact.

The release saves one torch file: a state dict per network (``kp_detector``, ``dense_motion_network``,
``inpainting_network``, and when trained ``bg_predictor`` and ``avd_network``), ``epoch`` and, in training saves,
optimiser states (``optimizer``, ``optimizer_bg_predictor``, ``optimizer_avd``). Our networks use the release's
names, so the keys only gain the ``network.`` prefix. The conversion is strict on every network the file holds;
the optimiser states and ``epoch`` are dropped. An optional network the file lacks is reported in one line and
keeps reenact's initial weights: without ``bg_predictor`` that is the identity affine (zero fc weight, identity
bias), so the background transform is off until a fine-tune trains it; without ``avd_network`` the model's
``avd_trained`` stays false and ``transfer=avd`` is refused until stage 2 (``experiment=tpsmm_avd``) trains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from reenact.convert.checkpoint import (
    NETWORK,
    build_targets,
    compose_model_config,
    write_converted,
)
from reenact.convert.keymap import ConversionError, ConversionReport, Rename, convert_state
from reenact.convert.sources import as_state_dict, load_torch_file

FAMILY = "tpsmm"
DEFAULT_PRESET = "tpsmm"
REQUIRED_PARTS = ("kp_detector", "dense_motion_network", "inpainting_network")
OPTIONAL_PARTS = ("bg_predictor", "avd_network")
PARTS = REQUIRED_PARTS + OPTIONAL_PARTS
OPTIMIZER_PREFIX = "optimizer"
AVD_TRAINED = "avd_trained"  # our buffer: whether the AVD network holds trained weights
RENAMES = (
    *(Rename(f"{part}.", f"{NETWORK}.{part}.") for part in PARTS),
    Rename(AVD_TRAINED, f"{NETWORK}.{AVD_TRAINED}"),
)
MISSING_NOTES = {
    "bg_predictor": "the source has no bg_predictor: the background transform stays the identity (reenact's initial "
                    "predictor) until a fine-tune trains it",
    "avd_network": "the source has no avd_network: transfer=avd is unavailable until experiment=tpsmm_avd trains it",
}


def flatten_tpsmm_checkpoint(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], list[str], Any]:
    """(tensors keyed ``<network>.<key>``, dropped top-level entries, saved epoch) of a release file."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where} is not a TPSMM checkpoint (a {type(obj).__name__}, not a dict)")
    unknown = [k for k in obj if k not in PARTS and k != "epoch" and not str(k).startswith(OPTIMIZER_PREFIX)]
    absent = [p for p in REQUIRED_PARTS if p not in obj]
    if unknown or absent:
        raise ConversionError(f"{where} is not a TPSMM checkpoint: missing entries {absent}, unexpected entries "
                              f"{unknown}")
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        if obj.get(part) is not None:
            for key, value in as_state_dict(obj[part], f"{where}[{part!r}]").items():
                tensors[f"{part}.{key}"] = value
    dropped = [str(k) for k in obj if str(k).startswith(OPTIMIZER_PREFIX)]
    return tensors, dropped, obj.get("epoch")


def convert_tpsmm_object(
    obj: Any, where: str, preset: str = DEFAULT_PRESET, overrides: Sequence[str] = ()
) -> tuple[dict[str, torch.Tensor], DictConfig, ConversionReport]:
    """The reenact state dict (``network.*``), model config and report for a loaded release file."""
    tensors, dropped, epoch = flatten_tpsmm_checkpoint(obj, where)
    report = ConversionReport(source_format=FAMILY, source=where, preset=preset)
    model_cfg = compose_model_config(preset, overrides)
    if model_cfg.get("family") != FAMILY:
        raise ConversionError(f"preset '{preset}' is not a TPSMM preset (network {model_cfg.network.get('_target_')})")
    targets = build_targets(model_cfg, with_discriminator=False)
    network = targets[NETWORK]
    present = {part for part in PARTS if any(k.startswith(f"{part}.") for k in tensors)}
    for part in OPTIONAL_PARTS:
        module = getattr(network, part)
        if part in present or module is None:
            continue  # a network the file holds, or one the preset has not (then a stored one is unexpected)
        for key, value in module.state_dict().items():
            tensors[f"{part}.{key}"] = value  # reenact's initial weights
        report.notes.append(MISSING_NOTES[part])
    tensors[AVD_TRAINED] = torch.tensor("avd_network" in present)
    state = convert_state(tensors, targets, RENAMES, report)
    report.dropped = list(dropped)
    if dropped:
        report.notes.append("optimiser states dropped: a fine-tune starts fresh optimisers")
    if epoch is not None:
        report.notes.append(f"the source was saved at epoch {epoch}; the converted checkpoint starts at epoch 0")
    return state, model_cfg, report


def convert_tpsmm(
    source: str | Path,
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    frame_size: int = 256,
) -> ConversionReport:
    """Convert the release file ``source`` into the reenact checkpoint ``out``."""
    source, out = Path(source), Path(out)
    state, model_cfg, report = convert_tpsmm_object(load_torch_file(source), str(source), preset, overrides)
    return write_converted(state, FAMILY, model_cfg, frame_size, report, out, [f"model={preset}", *overrides])
