"""Finiteness checks for model state: a checkpoint with NaN or inf tensors must never be saved or used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reenact.errors import ReenactError

DIVERGED_HINT = "training diverged (lower the learning rate or clip gradients: model.groups.<name>.grad_clip)"


class NonFiniteError(ReenactError, FloatingPointError):
    """Training produced a NaN or inf (a loss term, a weight or a BatchNorm statistic).

    A user-facing error: the training entry point reports it as one line. It is also a FloatingPointError, so
    code that catches that keeps working.
    """


def nonfinite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """The keys of the floating-point tensors in ``state_dict`` that hold a NaN or an inf, in order.

    Nested mappings (a whole Lightning checkpoint's ``state_dict`` entry, or a dict of sub-state-dicts) are
    searched too and reported with dotted keys. Integer tensors (BatchNorm's ``num_batches_tracked``) and
    non-tensor values cannot be non-finite and are skipped.
    """
    bad: list[str] = []
    for key, value in state_dict.items():
        if isinstance(value, Mapping):
            bad.extend(f"{key}.{sub}" for sub in nonfinite_tensors(value))
        elif (isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())
              and not bool(torch.isfinite(value).all())):
            bad.append(str(key))
    return bad


def summarise_keys(keys: Sequence[str], limit: int = 3) -> str:
    """``'N tensors (a, b, c, ...)'``: short enough for a one-line message."""
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''} ({shown})"


def require_finite(state_dict: Mapping[str, Any], what: str) -> None:
    """Raise NonFiniteError naming the first few non-finite tensors of ``state_dict``, if there are any."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise NonFiniteError(f"{what}: non-finite values in {summarise_keys(bad)}; {DIVERGED_HINT}")
