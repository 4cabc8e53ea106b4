"""Where the Hydra configs live and how the package composes them outside ``@hydra.main``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
VERSION_BASE = "1.3"


def native_cpu_precision() -> str:
    """``bf16-mixed`` where the CPU computes bfloat16 natively (AVX512-BF16 / AMX), else ``32-true``.

    Used by ``trainer=cpu`` as ``${reenact.cpu_precision:}``: on such CPUs bf16 autocast makes a small
    model's step about 1.5x faster; elsewhere bf16 is emulated and slower than fp32.
    """
    import torch

    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


# Registered at import: every module that composes our configs imports this one first.
if not OmegaConf.has_resolver("reenact.cpu_precision"):
    OmegaConf.register_new_resolver("reenact.cpu_precision", native_cpu_precision)


def compose_config(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides (used by tests and small CLIs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=VERSION_BASE):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def instantiate_collection(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-nodes group (callbacks, loggers); ``null`` -> []."""
    if cfg is None:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """A resolved, plain-dict copy that can go into a weights-only checkpoint or a logger."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    return container
