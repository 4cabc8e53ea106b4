"""The speed switches of a model, set up in one place: channels-last storage, NNPACK convolutions and
``torch.compile`` (all off by default; measured in experiments/2026-12-01_performance.md).

Training (``model.channels_last``, ``model.nnpack``, ``model.compile``) and animation (``channels_last=true``,
``nnpack=true``) both go through :meth:`PerformanceSettings.apply`, so the order the switches need is kept everywhere:
channels-last first (a channels-last layer keeps its own forward, so NNPACK leaves it alone), then NNPACK, then
compilation. Each changes the modules in place: Parameter objects, state-dict keys and checkpoints stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from reenact.utils.memory_format import to_channels_last
from reenact.utils.nnpack import use_nnpack


@dataclass(frozen=True)
class PerformanceSettings:
    channels_last: bool = False
    nnpack: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("channels_last", "nnpack", "compile"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"model.{name} must be true or false, got {value!r}")

    def apply(
        self, networks: Sequence[nn.Module], convolutions: Sequence[nn.Module] = (), compiled: Sequence[nn.Module] = ()
    ) -> None:
        """Store ``networks`` channels-last, route the convolutions of ``convolutions`` (default: ``networks``)
        through NNPACK and compile each of ``compiled`` on its own."""
        if self.channels_last:
            for network in networks:
                to_channels_last(network)
        if self.nnpack:
            for module in convolutions or networks:
                use_nnpack(module)
        if self.compile:
            for module in compiled:
                module.compile()  # in place: state_dict keys, checkpoints and optimisers are unchanged
