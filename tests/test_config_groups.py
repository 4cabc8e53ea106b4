"""Every option of every config group composes, and what it configures builds on this machine.

conf/task/ holds the settings every model preset shares (composed through the presets, never chosen alone).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from reenact.utils.hydra_utils import CONFIG_DIR, compose_config, to_plain

CONF = Path(CONFIG_DIR)
# groups chosen on the command line as group=option (hydra/launcher is hydra's own group)
GROUPS = ["data", "model", "model/refinement", "trainer", "logger", "callbacks", "paths", "debug", "experiment",
          "hparams_search", "hydra/launcher"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
# logger extras that are optional installs (pyproject extras); without them the logger cannot be built
OPTIONAL_MODULES = {"tensorboard": "tensorboard"}


def test_every_group_is_covered() -> None:
    folders = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    groups = {str(Path(f).parent) for f in folders} - {".", "hydra", "task"}
    assert groups == set(GROUPS)


def offline(cfg: DictConfig) -> None:
    """No downloads: the perceptual loss's ImageNet VGG is user-supplied in real runs."""
    with open_dict(cfg):
        for term in (cfg.model.objective.terms or {}).values():
            if term is not None and term.get("vgg_pretrained"):
                term.vgg_pretrained = False


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group: str, option: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    override = f"hydra/launcher={option}" if group == "hydra/launcher" else f"{group}={option}"
    # real-data options need the folder a user passes (data.root=...), as the README's commands do
    needs_root = group == "data" and option != "synthetic"
    if group == "experiment":  # a recipe for real clips, unless it trains on the built-in synthetic faces
        probe = compose_config("train", [override, f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"])
        needs_root = probe.data.get("synthetic") is None
    extra = [f"data.root={tmp_path / 'data'}"] if needs_root else []
    cfg = compose_config("train", [override, *extra, f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"],
                         return_hydra_config=group == "hydra/launcher")
    if group == "hydra/launcher":
        assert get_class(cfg.hydra.launcher._target_)
        return
    offline(cfg)
    plain = to_plain(cfg)  # every interpolation resolves
    if group in ("model", "model/refinement", "experiment"):
        task = instantiate(cfg.model, _partial_=True)(model_config=plain["model"], data_config=plain["data"])
        assert task.network.family == cfg.model.family
    if group in ("data", "experiment"):
        assert type(instantiate(cfg.data)).__name__ == "ReenactDataModule"
    if group == "trainer":
        if cfg.trainer.accelerator == "gpu":
            assert get_class(cfg.trainer._target_)  # no GPU here: composing and importing is what can be checked
        else:
            instantiate(cfg.trainer, logger=False)
    if group == "logger":
        for name, node in (cfg.logger or {}).items():
            try:
                instantiate(node)
            except Exception as exc:  # Hydra wraps the constructor's error
                cause = exc.__cause__ or exc
                missing = [m for m in OPTIONAL_MODULES.values() if m in str(cause)]
                assert isinstance(cause, ModuleNotFoundError) and missing, f"logger {name}: {cause}"
                pytest.skip(f"logger {name} needs the optional extra: pip install reenact[{missing[0]}]")
    if group == "callbacks":
        for node in (cfg.callbacks or {}).values():
            if node is not None:
                instantiate(node)
