"""Key mapping shared by the converters: rename official keys, match them against our model, report.

A conversion is strict. Every tensor of the source is consumed: copied into a parameter or buffer of our model,
or (for a fixed buffer that we compute ourselves and do not save, such as FOMM's anti-aliasing kernel) checked
equal to ours. Every persistent parameter and buffer of our model is filled. The one tolerated gap is BatchNorm's
``num_batches_tracked``, which old checkpoints lack; it only matters with ``momentum=None`` and is set to 0.
Anything else raises one :class:`ConversionError` naming the missing, unexpected and wrongly shaped keys in
the source's own naming.

Spectral norm: the official files were written by ``torch.nn.utils.spectral_norm`` (``weight_orig``,
``weight_u``, ``weight_v``); reenact uses ``torch.nn.utils.parametrizations.spectral_norm``
(``parametrizations.weight.original``, ``parametrizations.weight.0._u``, ``._v``). Both divide the weight by
sigma = u . (W v) in eval mode, so renaming is exact. Files written before PyTorch 1.0 store the normalised
``weight`` instead of ``weight_v``; v is then solved from W v = u and rescaled so that u . (W v) gives back
their sigma.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from reenact.checkpoints import CheckpointError

# How many key names an error message lists per category before it only counts the rest.
LISTED_KEYS = 10
# A fixed buffer in a source file must equal ours to this absolute tolerance (float32 rounding of one formula).
FIXED_BUFFER_ATOL = 1e-6
DEFAULTABLE_SUFFIX = ".num_batches_tracked"


class ConversionError(CheckpointError):
    """An official checkpoint that cannot become a reenact checkpoint exactly (one-line message)."""


@dataclass(frozen=True)
class Rename:
    """Replace ``source`` by ``target`` at the start (``prefix=True``) or the end of a key; invertible."""

    source: str
    target: str
    prefix: bool = True

    def apply(self, key: str, inverse: bool = False) -> str | None:
        old, new = (self.target, self.source) if inverse else (self.source, self.target)
        if self.prefix and key.startswith(old):
            return new + key[len(old) :]
        if not self.prefix and key.endswith(old):
            return key[: len(key) - len(old)] + new
        return None


SPECTRAL_NORM_RENAMES = (
    Rename(".weight_orig", ".parametrizations.weight.original", prefix=False),
    Rename(".weight_u", ".parametrizations.weight.0._u", prefix=False),
    Rename(".weight_v", ".parametrizations.weight.0._v", prefix=False),
)


def rename_key(key: str, renames: Sequence[Rename], inverse: bool = False) -> str:
    """Apply the first matching prefix rename and the first matching suffix rename (list order decides)."""
    for at_start in (True, False):
        for rule in renames:
            if rule.prefix == at_start:
                renamed = rule.apply(key, inverse)
                if renamed is not None:
                    key = renamed
                    break
    return key


@dataclass
class ConversionReport:
    """What a conversion did, for the command's output and for tests."""

    source_format: str
    source: str
    preset: str
    copied: list[str] = field(default_factory=list)  # source keys copied into our state dict
    checked_equal: list[str] = field(default_factory=list)  # source keys equal to a fixed buffer of ours
    derived: list[str] = field(default_factory=list)  # legacy spectral-norm keys turned into weight_v
    defaulted: list[str] = field(default_factory=list)  # our keys absent from the source, set to 0
    dropped: list[str] = field(default_factory=list)  # source entries that have no reenact counterpart
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"converted {self.source_format} weights from {self.source} into the '{self.preset}' preset",
            f"  {len(self.copied)} tensors copied; every source tensor consumed, every parameter and buffer filled",
        ]
        if self.checked_equal:
            out.append(f"  checked equal to reenact's fixed buffers (not stored): {', '.join(self.checked_equal)}")
        if self.derived:
            out.append(f"  legacy spectral norm (pre-1.0 'weight') turned into weight_v: {', '.join(self.derived)}")
        if self.defaulted:
            out.append(f"  absent from the source, set to 0: {len(self.defaulted)} BatchNorm num_batches_tracked")
        if self.dropped:
            out.append(f"  not converted: {', '.join(self.dropped)}")
        out.extend(f"  {note}" for note in self.notes)
        return out


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:LISTED_KEYS])
    more = f" (+{len(keys) - LISTED_KEYS} more)" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} [{shown}{more}]"


def _solve_spectral_v(weight_orig: torch.Tensor, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v with W v = u (least squares) scaled so that u . (W v) equals the sigma in weight = W / sigma."""
    matrix = weight_orig.flatten(1).double()  # (out, in * k * k): spectral norm's dim 0 for conv and linear
    sigma = weight_orig.double().norm() / weight.double().norm()
    v = torch.linalg.pinv(matrix) @ u.double()
    v = v * (sigma / torch.dot(u.double(), matrix @ v))
    return v.to(weight_orig.dtype)


def upgrade_legacy_spectral_norm(source: dict[str, torch.Tensor], report: ConversionReport) -> None:
    """In place: replace pre-1.0 ``<name>.weight`` (next to weight_orig and weight_u, no weight_v) by weight_v."""
    for key in [k for k in source if k.endswith(".weight_orig")]:
        base = key[: -len("_orig")]
        if base + "_v" not in source and base in source and base + "_u" in source:
            source[base + "_v"] = _solve_spectral_v(source[key], source.pop(base), source[base + "_u"])
            report.derived.append(base)


def _equal_fixed(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    if tuple(ours.shape) != tuple(theirs.shape):
        return False
    if ours.is_meta or theirs.is_meta:  # a shape-only dry run (tests plan full-size conversions on 'meta')
        return True
    return bool(torch.allclose(ours.float(), theirs.float(), rtol=0, atol=FIXED_BUFFER_ATOL))


def convert_state(
    source: Mapping[str, torch.Tensor],
    target: nn.Module,
    renames: Sequence[Rename],
    report: ConversionReport,
) -> dict[str, torch.Tensor]:
    """Map ``source`` (official key -> tensor) onto ``target``'s state dict keys; raise on any mismatch.

    Returns a state dict with exactly ``target.state_dict()``'s keys, dtypes of ours (float32 parameters).
    """
    source = dict(source)
    upgrade_legacy_spectral_norm(source, report)
    expected = target.state_dict()
    fixed = {name: buf for name, buf in target.named_buffers() if name not in expected}  # non-persistent
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong: list[str] = []
    claimed: set[str] = set()  # our keys whose source tensor has the wrong shape: reported once, as wrong
    for key, tensor in source.items():
        if not isinstance(tensor, torch.Tensor):
            unexpected.append(f"{key} (a {type(tensor).__name__}, not a tensor)")
            continue
        name = rename_key(key, renames)
        if name in expected:
            ours = expected[name]
            if tuple(tensor.shape) != tuple(ours.shape):
                wrong.append(f"{key} {tuple(tensor.shape)} vs ours {tuple(ours.shape)}")
                claimed.add(name)
                continue
            state[name] = tensor.detach().to(dtype=ours.dtype)
            report.copied.append(key)
        elif name in fixed:
            if not _equal_fixed(fixed[name], tensor):
                wrong.append(f"{key} differs from the fixed buffer reenact computes")
                continue
            report.checked_equal.append(key)
        else:
            unexpected.append(key)
    missing = []
    for name, ours in expected.items():
        if name in state or name in claimed:
            continue
        if name.endswith(DEFAULTABLE_SUFFIX):
            state[name] = torch.zeros_like(ours)
            report.defaulted.append(name)
        else:
            missing.append(rename_key(name, renames, inverse=True))
    if missing or unexpected or wrong:
        problems = [
            f"missing {_listed(missing)}" if missing else "",
            f"unexpected {_listed(unexpected)}" if unexpected else "",
            f"wrong shape or value {_listed(wrong)}" if wrong else "",
        ]
        raise ConversionError(
            f"{report.source} does not match reenact's '{report.preset}' preset: "
            + "; ".join(p for p in problems if p)
        )
    return state
