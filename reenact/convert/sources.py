"""Reading official weight files as data, never code: ``torch.load(weights_only=True)`` or safetensors.

The safetensors format is read here directly (an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw bytes), so no extra package is needed and nothing in the file
can execute.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reenact.convert.keymap import ConversionError

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DATA_PARALLEL_PREFIX = "module."
# A header larger than this is not a weights file (the format's own readers use the same bound).
MAX_HEADER_BYTES = 100_000_000


def load_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; any failure becomes a one-line ConversionError."""
    if not path.is_file():
        raise ConversionError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and weights-only refusals all mean: not a plain weights file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"cannot read {path} as a weights-only PyTorch file: {first}") from None


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, as CPU tensors."""
    if sys.byteorder != "little":
        raise ConversionError(f"{path}: safetensors are little-endian; this machine is {sys.byteorder}-endian")
    if not path.is_file():
        raise ConversionError(f"file not found: {path}")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ConversionError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > min(MAX_HEADER_BYTES, len(raw) - 8):
        raise ConversionError(f"{path} is not a safetensors file (header length {header_len} out of range)")
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not a safetensors file (bad JSON header: {exc})") from None
    data = memoryview(raw)[8 + header_len :]
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')!r}")
        shape = [int(n) for n in info["shape"]]
        start, end = (int(n) for n in info["data_offsets"])
        numel = 1
        for n in shape:
            numel *= n
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= start <= end <= len(data) or end - start != numel * itemsize:
            raise ConversionError(f"{path}: tensor {name} has an inconsistent byte range [{start}, {end})")
        # a fresh buffer per tensor keeps every tensor aligned and writable
        flat = torch.frombuffer(bytearray(data[start:end]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


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
