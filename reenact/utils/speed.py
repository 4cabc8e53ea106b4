"""The speed settings for the machine at hand: precision, memory layout and Adam implementation per device kind.

One rule, read by ``trainer=cpu`` (its precision, ``${reenact.cpu_precision:}``), by ``python -m reenact.animate``
(``precision=auto``, ``channels_last=auto``) and by ``benchmarks/train_step.py --configs recommended``. Each CPU
kind's setting leaves out every lever that a recorded run on that kind found slower (a ``fomm_vox256`` training step,
batch 2, 256x256, step time over the fp32 eager step of the same run; fused Adam on AVX2 was not measured alone):

============  =========  =============  ==========  ==========================================================
kind          precision  channels-last  fused Adam  measured
============  =========  =============  ==========  ==========================================================
avx2          fp32       no             yes         AMD EPYC (Zen 3): channels-last 1.21-1.38 (slower), bf16
                                                    emulated > 20x (experiments/2026-12-01_performance.md)
avx512        fp32       yes            yes         Intel Xeon without AVX512-BF16: channels-last + fused Adam
                                                    0.80-0.88, bf16 emulated 2.67 (same record)
avx512_bf16   bf16       no             no          AMD EPYC with AVX512-BF16 (issue 33): bf16 0.60, channels-last
                                                    0.94, fused Adam 1.06 (slower), bf16 + channels-last + fused
                                                    Adam did not finish 7 steps in 10 minutes
amx           bf16       no             no          not measured: every AMX CPU also has AVX512-BF16, so it takes
                                                    that rule
cuda          bf16       yes            yes         not measured (no GPU lent yet; benchmarks/gpu_check.py)
============  =========  =============  ==========  ==========================================================

A CPU below AVX2 takes the ``avx2`` rule (channels-first fp32 is the safe choice everywhere). The 64x64 CPU presets
(``model=fomm`` ...) keep their own ``channels_last: true``: at that size channels-last gains on AVX2 (0.85-0.90) and
AVX-512 (0.75), and the issue 33 CPU trained the ``make train`` preset in bf16 with it in 7 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CPU_KINDS = ("avx2", "avx512", "avx512_bf16", "amx")
KINDS = (*CPU_KINDS, "cuda")


@dataclass(frozen=True)
class SpeedSettings:
    """What to run on one device kind: a Lightning precision, the memory layout and the Adam implementation."""

    kind: str
    precision: str  # Lightning's name: "bf16-mixed" | "32-true"
    channels_last: bool
    fused_adam: bool

    @property
    def autocast(self) -> str:
        """The precision in animation's terms (``fp32`` | ``bf16``)."""
        return "bf16" if self.precision.startswith("bf16") else "fp32"

    def train_overrides(self) -> list[str]:
        """The Hydra overrides of ``python train.py`` that select these settings."""
        overrides = [f"trainer.precision={self.precision}", f"model.channels_last={str(self.channels_last).lower()}"]
        return overrides + (["+model.optimizer.fused=true"] if self.fused_adam else [])


# kind -> (precision, channels_last, fused_adam); the module docstring gives the measurement behind each row
RULES: dict[str, tuple[str, bool, bool]] = {
    "avx2": ("32-true", False, True),
    "avx512": ("32-true", True, True),
    "avx512_bf16": ("bf16-mixed", False, False),
    "amx": ("bf16-mixed", False, False),
    "cuda": ("bf16-mixed", True, True),
}


def _cpu_has(name: str) -> bool:
    return bool(getattr(torch.cpu, name, lambda: False)())


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX tiles).

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not the test: it is true on every AVX-512 CPU, where oneDNN
    emulates bfloat16 and a bf16-mixed step of ``fomm`` at 256x256 takes twice as long as fp32 (measured on an
    AVX-512 Xeon without AVX512-BF16, experiments/2026-12-01_performance.md).
    """
    return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")


def cpu_kind() -> str:
    """This CPU's kind for :data:`RULES`: ``amx``, ``avx512_bf16``, ``avx512`` or ``avx2`` (also for older CPUs)."""
    if _cpu_has("_is_amx_tile_supported"):
        return "amx"
    if _cpu_has("_is_avx512_bf16_supported"):
        return "avx512_bf16"
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return "avx512"
    return "avx2"


def device_kind(device: str | torch.device = "cpu") -> str:
    """``cuda`` for a CUDA device, else this CPU's :func:`cpu_kind`."""
    return "cuda" if torch.device(device).type == "cuda" else cpu_kind()


def recommended(device: str | torch.device = "cpu") -> SpeedSettings:
    """The fastest measured settings for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch.device)."""
    kind = device_kind(device)
    precision, channels_last, fused_adam = RULES[kind]
    return SpeedSettings(kind, precision, channels_last, fused_adam)
