"""Reading official weight files as data, never code: ``torch.load(weights_only=True)`` or ``safetensors``.

A ``.safetensors`` file is a JSON header followed by raw tensor bytes, read by the ``safetensors`` package; nothing
in it can execute.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from reenact.checkpoints import load_error_reason
from reenact.convert.keymap import ConversionError
from reenact.utils.messages import first_line

DATA_PARALLEL_PREFIX = "module."


def load_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; any failure becomes a one-line ConversionError."""
    if not path.is_file():
        raise ConversionError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and weights-only refusals all mean: not a plain weights file
        raise ConversionError(f"cannot read {path}: {load_error_reason(exc)}") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, as CPU tensors.

    A file that is not safetensors, or is corrupt or truncated, raises a one-line ConversionError.
    """
    if not path.is_file():
        raise ConversionError(f"file not found: {path}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ConversionError(f"cannot read {path} as a safetensors file: {first_line(exc)}") from None


def strip_data_parallel(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that nn.DataParallel / DDP add, when every key carries it."""
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        return {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def as_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a flat mapping from names to tensors (a state dict) and return it unprefixed."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ConversionError(f"{where} is not a state dict (got {type(obj).__name__})")
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ConversionError(f"{where} is not a state dict: non-tensor entries {others[:10]}")
    return strip_data_parallel(obj)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``.pth``, ``.pt``, ``.pth.tar``, ...)."""
    if path.suffix == ".safetensors":
        return as_state_dict(load_safetensors(path), str(path))
    return as_state_dict(load_torch_file(path), str(path))
