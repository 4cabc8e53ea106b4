"""Every preset composes and instantiates; wrong keys and wrong types fail at start-up with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from reenact.cli.info import parameter_table
from reenact.cli.train import validate
from reenact.utils.config_check import ConfigError, check_instantiable, check_key
from reenact.utils.hydra_utils import CONFIG_DIR, compose_config

REPO = Path(__file__).resolve().parents[1]


def test_default_config_instantiates_every_group() -> None:
    cfg = compose_config("train", ["paths.root_dir=/tmp", "paths.output_dir=/tmp/out"])
    for group in ("data", "model", "trainer", "callbacks", "logger"):
        check_instantiable(cfg[group], group)
    task = instantiate(cfg.model)
    assert not task.objective.uses_discriminator
    assert task.discriminator is None, "no adversarial term is listed: no discriminator may be built"
    assert task.optimizer_names == ["kp_detector", "generator"]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_experiments_compose(experiment: str) -> None:
    cfg = compose_config("train", [f"experiment={experiment}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/o",
                                    "data.root=/data", "model.init_from=/tmp/x.ckpt"])
    check_instantiable(cfg.model, "model")
    # the vox256 recipes train at 256x256; real_cpu is the CPU recipe at the CPU preset's 64x64; a second stage
    # trains at the size of the run it starts from
    if experiment.startswith("vox256"):
        assert cfg.data.frame_size == 256
    elif experiment.endswith("_cpu"):
        assert cfg.data.frame_size == 64


def test_adversarial_stage_builds_keypoint_conditioned_discriminator() -> None:
    cfg = compose_config("train", ["experiment=vox256_fomm_adv", "model.init_from=x", "paths.root_dir=/tmp",
                                    "paths.output_dir=/tmp/o", "data.root=/d"])
    terms = cfg.model.objective.terms
    assert terms.generator_gan._target_ == "reenact.losses.adversarial.GeneratorAdversarial"
    assert terms.generator_gan.weight == 1.0
    assert terms.feature_matching._target_ == "reenact.losses.adversarial.FeatureMatching"
    assert cfg.model.discriminator.use_kp and not cfg.model.discriminator.sn
    assert cfg.model.scheduler.kind == "constant" and cfg.trainer.max_epochs == 50  # no learning-rate drops


def test_vox256_parameter_counts_equal_the_original_release() -> None:
    rows = {name.split(" ")[0]: count for name, _, count in parameter_table(["model=fomm_vox256"])}
    assert rows["kp_detector"] == 14_215_368
    assert rows["generator"] == 45_575_391
    assert rows["generator.dense_motion_network"] == 37_730_268
    assert rows["discriminator"] == 2_758_849


def test_unknown_key_in_a_config_names_the_key() -> None:
    cfg = compose_config("train", ["+model.network.kp_detector.num_kpp=5"])
    with pytest.raises(ConfigError, match=r"model.network.kp_detector.num_kpp: unknown key"):
        check_instantiable(cfg.model, "model")


def test_wrong_type_names_the_key() -> None:
    cfg = compose_config("train", ["model.network.kp_detector.num_kp=ten"])
    # the key as typed (what the CLI checks first) ...
    with pytest.raises(ConfigError, match=r"model.network.kp_detector.num_kp: expected int, got 'ten'"):
        check_key(cfg, "model.network.kp_detector.num_kp")
    # ... and the whole tree, where the first node to read the value (maybe one interpolating it) is named
    with pytest.raises(ConfigError, match=r"model\.(network\.kp_detector|discriminator)\.num_kp: expected int, "
                                          r"got 'ten'"):
        check_instantiable(cfg.model, "model")
    cfg = compose_config("train", ["model.objective.terms.equivariance_value.weight=[1,2]"])
    with pytest.raises(ConfigError, match=r"model.objective.terms.equivariance_value.weight: expected float"):
        check_instantiable(cfg.model, "model")


def test_missing_required_value_names_the_key() -> None:
    cfg = compose_config("train", ["experiment=vox256_fomm_adv", "data.root=/d", "paths.root_dir=/tmp",
                                    "paths.output_dir=/tmp/o"])
    with pytest.raises(ConfigError, match=r"model.init_from: required by this experiment"):
        validate(cfg)


def _train_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled",
                                                      "HOME": str(Path.home())})


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.network.kp_detector.num_kp=ten", "model.network.kp_detector.num_kp: expected int"),
        ("model.networkk.x=1", "networkk"),
        ("+model.network.kp_detector.num_kpp=5", "num_kpp"),
    ],
)
def test_cli_config_errors_are_one_line(override: str, expected: str, tmp_path: Path) -> None:
    result = _train_cli(override, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3, result.stderr


def test_info_cli_prints_counts() -> None:
    result = subprocess.run([sys.executable, "-m", "reenact.info", "model=fomm_vox256"], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "14,215,368" in result.stdout and "45,575,391" in result.stdout and "2,758,849" in result.stdout


def test_cpu_trainer_uses_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from reenact.utils import hydra_utils

    cfg = hydra_utils.compose_config("train", ["trainer=cpu"])
    assert cfg.trainer.precision == hydra_utils.native_cpu_precision()
    # an AVX-512 CPU without bf16 arithmetic: oneDNN says "bf16 supported" (emulated, twice as slow): fp32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert hydra_utils.native_cpu_precision() == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert hydra_utils.native_cpu_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert hydra_utils.native_cpu_precision() == "bf16-mixed"
