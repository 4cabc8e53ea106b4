"""The reenact side of a conversion: the model config, the networks to fill, and the checkpoint file.

A converted checkpoint has the layout the training task writes (``state_dict`` keys ``network.<...>`` and
``discriminator.<...>``; ``reenact`` = family, resolved model config, data config) plus the Lightning keys that
``model.init_from`` and :func:`reenact.load_pretrained` read (``epoch``, ``global_step``,
``pytorch-lightning_version``). It has no optimiser or loop state, so it starts runs (``model.init_from=``) and
is used for inference; it cannot resume one (``ckpt_path=``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from reenact.convert.keymap import ConversionError, ConversionReport
from reenact.utils.hydra_utils import compose_config, to_plain

# Only the model group matters; paths are pinned so composing does not depend on the working directory.
FIXED_OVERRIDES = ("paths.root_dir=/tmp", "paths.output_dir=/tmp")
NETWORK = "network"
DISCRIMINATOR = "discriminator"


def compose_model_config(preset: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``cfg.model`` of ``conf/train.yaml`` composed with ``model=<preset>`` and ``model.*`` overrides."""
    bad = [o for o in overrides if not o.lstrip("+~").startswith("model.")]
    if bad:
        raise ConversionError(f"overrides must set model.* keys, got {bad}")
    try:
        cfg = compose_config("train", [f"model={preset}", *FIXED_OVERRIDES, *overrides])
    except Exception as exc:  # Hydra's composition and override errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"cannot compose model={preset} with {list(overrides)}: {first}") from None
    return cfg.model


def build_targets(model_cfg: DictConfig, with_discriminator: bool) -> nn.ModuleDict:
    """The networks whose state the conversion fills, keyed as in the training task's state dict."""
    try:
        modules: dict[str, nn.Module] = {NETWORK: instantiate(model_cfg.network)}
        if with_discriminator:
            modules[DISCRIMINATOR] = instantiate(model_cfg.discriminator)()
    except Exception as exc:  # constructor errors of a bad override, wrapped by Hydra
        while exc.__cause__ is not None:
            exc = exc.__cause__
        raise ConversionError(f"cannot build the model: {str(exc).strip().splitlines()[0]}") from None
    return nn.ModuleDict(modules)


def lightning_checkpoint(
    state_dict: dict[str, torch.Tensor],
    family: str,
    model_cfg: DictConfig,
    frame_size: int,
    report: ConversionReport,
) -> dict[str, Any]:
    return {
        "epoch": 0,
        "global_step": 0,
        # read from the package metadata: importing lightning itself takes seconds
        "pytorch-lightning_version": version("lightning"),
        "state_dict": state_dict,
        "reenact": {
            "family": family,
            "model_config": to_plain(model_cfg),
            "data_config": {"frame_size": int(frame_size)},
            "converted_from": {
                "format": report.source_format,
                "source": report.source,
                "preset": report.preset,
                "not_converted": list(report.dropped),
            },
        },
    }


def save_checkpoint(checkpoint: dict[str, Any], out: Path) -> None:
    """Write atomically, so an interrupted conversion never leaves a truncated checkpoint behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, out)


def usage_notes(out: Path, train_overrides: Sequence[str]) -> list[str]:
    extra = " ".join(train_overrides)
    return [
        f"fine-tune: python train.py {extra} model.init_from={out}".replace("  ", " "),
        f"evaluate:  python -m reenact.evaluate ckpt_path={out} data=voxceleb data.root=DATA",
        f"python:    reenact.api.load_pretrained('{out}')",
    ]


def write_converted(
    state_dict: dict[str, torch.Tensor],
    family: str,
    model_cfg: DictConfig,
    frame_size: int,
    report: ConversionReport,
    out: Path,
    train_overrides: Sequence[str],
) -> ConversionReport:
    """Save a converted state as a reenact checkpoint at ``out`` (atomically) and add to ``report`` how to use it;
    ``train_overrides``: what ``python train.py`` needs to rebuild the converted model (``model=PRESET ...``)."""
    save_checkpoint(lightning_checkpoint(state_dict, family, model_cfg, frame_size, report), out)
    report.notes.extend(usage_notes(out, train_overrides))
    return report
