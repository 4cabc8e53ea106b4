"""The README's training command lines run as written: sweeps (grid, Optuna, SLURM), W&B logging, run folders and
one-line config errors (issue 18, items 1, 2, 5 and 10).

Each command line is read from README.md and run as a subprocess of ``python train.py`` in a temporary folder that
holds a copy of ``train.py``, so the relative ``logs/`` and ``optuna.db`` land there; REENACT_CACHE points at one
shared cache for the synthetic data. Where a line as written would train for minutes, only overrides that shrink the
data and the epochs (``CHEAP_RUN``) are appended; ``test_readme_grid_sweep_byte_for_byte`` runs the grid line unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from reenact.utils.config_check import ConfigError, check_instantiable, check_key
from reenact.utils.hydra_utils import (
    claim_fresh_dir,
    compose_config,
    composition_error_line,
    first_sweep_combination,
    refuse_reused_run_dir,
)
from tests.helpers.configs import CHEAP_RUN

REPO = Path(__file__).resolve().parents[1]

def readme_train_lines() -> list[list[str]]:
    """The arguments of every ``python train.py ...`` line in README.md (continuations joined, comments cut)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    return [shlex.split(line, comments=True)[2:] for line in text.splitlines() if line.startswith("python train.py ")]


def readme_args(*start: str) -> list[str]:
    """The arguments of the one README line whose arguments begin with ``start``."""
    found = [args for args in readme_train_lines() if args[: len(start)] == list(start)]
    assert len(found) == 1, f"README.md should have exactly one `python train.py {' '.join(start)} ...` line"
    return found[0]


@pytest.fixture(scope="session")
def reenact_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reenact_cache")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder to run ``python train.py`` in, as a user runs it from a checkout."""
    shutil.copy(REPO / "train.py", tmp_path / "train.py")
    return tmp_path


def train_cli(
    args: list[str], cwd: Path, cache: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(cache, env))


def _env(cache: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "REENACT_CACHE": str(cache), **extra}


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def run_folders(cwd: Path, kind: str = "runs") -> list[Path]:
    folder = cwd / "logs" / "train" / kind
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def expected_jobs(args: list[str]) -> int:
    """How many jobs a basic-sweeper grid launches: the product of the comma-separated value counts."""
    return math.prod(len(a.split("=", 1)[1].split(",")) for a in args if "=" in a and "," in a)


# ---- 1. sweeps ----------------------------------------------------------------------------------------------------


def test_readme_grid_sweep_runs_as_written(workdir: Path, reenact_cache: Path) -> None:
    args = readme_args("-m", "model.lr.generator=1e-4,2e-4")
    result = train_cli([*args, *CHEAP_RUN], workdir, reenact_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = run_folders(workdir, "multiruns")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == expected_jobs(args) == 4
    combos = set()
    for job in jobs:
        assert "val/l1" in json.loads((job / "metrics.json").read_text())["metrics"]
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        combos.add(tuple(o for o in overrides if o.startswith(("model.lr.", "model.objective."))))
    assert len(combos) == 4, combos
    # REENACT_CACHE still moves the synthetic data out of the working folder.
    assert any(reenact_cache.glob("synthetic/*")) and not (workdir / ".cache").exists()


@pytest.mark.slow
def test_readme_grid_sweep_byte_for_byte(workdir: Path, reenact_cache: Path) -> None:
    """The README grid line with nothing appended: four full CPU runs (up to 12.5 min each), hence slow."""
    args = readme_args("-m", "model.lr.generator=1e-4,2e-4")
    result = train_cli(args, workdir, reenact_cache, timeout=4 * 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = run_folders(workdir, "multiruns")
    assert len(list(sweep.glob("*/metrics.json"))) == expected_jobs(args)


def test_readme_optuna_sweep_runs_as_written(workdir: Path, reenact_cache: Path) -> None:
    args = readme_args("-m", "hparams_search=optuna")
    assert "hydra.sweeper.storage=sqlite:///optuna.db" in args
    # Two trials instead of twenty (later overrides win), all of them random start-up trials.
    cheap = ["hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2"]
    result = train_cli([*args, *cheap, *CHEAP_RUN], workdir, reenact_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = run_folders(workdir, "multiruns")
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()
    assert len(list(sweep.glob("*/metrics.json"))) == 2
    # The study persisted in the sqlite storage the README names, relative to where the command ran.
    with sqlite3.connect(workdir / "optuna.db") as db:
        assert db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone() == (2,)


def test_readme_slurm_sweep_reaches_the_scheduler(workdir: Path, reenact_cache: Path) -> None:
    """The SLURM line up to ``sbatch``: stand-ins for ``srun``/``sbatch`` record the job script and refuse it."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_COPY"\necho "sbatch: test stand-in" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    args = readme_args("-m", "hydra/launcher=slurm")
    result = train_cli(args, workdir, reenact_cache, PATH=f"{bin_dir}:{os.environ['PATH']}",
                       SBATCH_COPY=str(workdir / "job.sh"))
    assert "HydraConfig was not set" not in result.stderr
    assert "sbatch: test stand-in" in result.stderr, result.stderr[-3000:]
    script = (workdir / "job.sh").read_text()
    for flag in ("--partition=gpu", "--gpus-per-node=8", "--ntasks-per-node=8"):
        assert f"#SBATCH {flag}" in script
    (sweep,) = run_folders(workdir, "multiruns")
    assert str(sweep / ".submitit") in script
    # The node that runs the job unpickles the launcher and resolves the sweep folder again, without Hydra's job
    # config: it must get the folder claimed at submission, not claim a new one.
    (job,) = sweep.glob(".submitit/*.pkl")
    check = (
        "import pickle, sys; import reenact.utils.hydra_utils; from hydra.core.singleton import Singleton\n"
        "job = pickle.load(open(sys.argv[1], 'rb')); Singleton.set_state(job.args[4])\n"
        "cfg = job.function.hydra_context.config_loader.load_sweep_config(job.function.config, job.args[0])\n"
        "print(cfg.hydra.sweep.dir, cfg.trainer.devices)\n"
    )
    remote = subprocess.run([sys.executable, "-c", check, str(job)], cwd=workdir, capture_output=True, text=True,
                            timeout=300, env=_env(reenact_cache, {}))
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert remote.stdout.split() == [str(sweep), "8"]
    assert run_folders(workdir, "multiruns") == [sweep]


def test_multirun_with_a_missing_option_names_it(workdir: Path, reenact_cache: Path) -> None:
    result = train_cli(["-m", "model=nope"], workdir, reenact_cache, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert "Could not find 'model/nope'" in line and "fomm_vox256" in line, line
    assert not run_folders(workdir, "multiruns")


def test_sweep_precheck_composes_the_first_job() -> None:
    first, sweeps = first_sweep_combination(
        ["model.lr.generator=1e-4,2e-4", "model=choice(fomm,liveportrait)", "seed=range(3,6)",
         "model.lr.discriminator=interval(0.1,0.2)", "data.batch_size=4"])
    assert sweeps
    assert first == ["model.lr.generator=0.0001", "model=fomm", "seed=3", "data.batch_size=4"]
    assert first_sweep_combination(["seed=1"]) == (["seed=1"], False)


# ---- 2. W&B -------------------------------------------------------------------------------------------------------


def test_readme_wandb_logging_runs_as_written(workdir: Path, reenact_cache: Path) -> None:
    args = readme_args("logger=wandb")
    result = train_cli([*args, *CHEAP_RUN], workdir, reenact_cache, WANDB_MODE="offline")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(workdir)
    (offline,) = (run / "wandb").glob("offline-run-*")
    videos = list((offline / "files" / "media" / "videos").rglob("*.mp4"))
    assert videos and all(v.stat().st_size > 0 for v in videos)
    assert list((offline / "files" / "media" / "images").rglob("*.png"))
    assert list((run / "images").glob("reconstruction_epoch*.mp4"))


# ---- 5. run folders -----------------------------------------------------------------------------------------------


def test_runs_started_together_get_their_own_folders(workdir: Path, reenact_cache: Path) -> None:
    # train=false: each run composes, builds everything and writes its folder, without training.
    args = ["train=false", *CHEAP_RUN]
    processes = [subprocess.Popen([sys.executable, "train.py", *args], cwd=workdir, env=_env(reenact_cache, {}),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    folders = run_folders(workdir)
    assert len(folders) == 3, folders
    for folder in folders:
        assert (folder / "metrics.json").is_file() and (folder / ".hydra" / "config.yaml").is_file()


def test_run_and_sweep_folders_of_the_same_second_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra.core.utils

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime(2026, 1, 2, 3, 4, 5)

    # Hydra's ${now:...} reads this name: every run below starts "in the same second".
    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)
    for key in ("run", "sweep"):
        folders = []
        for _ in range(3):
            cfg = compose_config("train", [f"paths.root_dir={tmp_path}"], return_hydra_config=True)
            folder = cfg.hydra[key].dir
            assert cfg.hydra[key].dir == folder, "resolving again must give the folder claimed the first time"
            folders.append(folder)
        assert len(set(folders)) == 3 and all(Path(f).is_dir() for f in folders), folders
        assert Path(folders[0]).name == "2026-01-02_03-04-05"


def test_claiming_a_folder_is_atomic(tmp_path: Path) -> None:
    base = str(tmp_path / "runs" / "same-second")
    barrier = threading.Barrier(8)
    claimed: list[str] = []

    def claim() -> None:
        barrier.wait()
        claimed.append(claim_fresh_dir(base))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8


def test_reusing_a_folder_with_checkpoints_needs_an_explicit_choice(workdir: Path, reenact_cache: Path) -> None:
    run = workdir / "earlier_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"another run's weights")
    args = [f"hydra.run.dir={run}", "train=false", *CHEAP_RUN]
    refused = train_cli(args, workdir, reenact_cache, timeout=300)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    (line,) = error_lines(refused)
    assert str(run) in line and "ckpt_path=" in line and "overwrite=true" in line, line
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"another run's weights"
    assert not (run / "metrics.json").exists()

    allowed = train_cli([*args, "overwrite=true"], workdir, reenact_cache, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert (run / "metrics.json").is_file()


def test_resuming_into_the_same_folder_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    refuse_reused_run_dir(tmp_path, str(tmp_path), overwrite=False)
    refuse_reused_run_dir(tmp_path, str(tmp_path / "checkpoints" / "last.ckpt"), overwrite=False)
    refuse_reused_run_dir(tmp_path / "fresh", None, overwrite=False)
    with pytest.raises(ConfigError, match="already holds another run's checkpoints"):
        refuse_reused_run_dir(tmp_path, str(tmp_path.parent / "elsewhere.ckpt"), overwrite=False)


# ---- 10. config errors in one line --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=-4", ["data.batch_size: expected a positive int, got -4"]),
        ("model.foo=1", ["Could not override 'model.foo'", "Key 'foo' is not in struct", "+model.foo=1"]),
        ("trainer.max_epochs=abc", ["trainer.max_epochs: expected int or null, got 'abc'"]),
    ],
)
def test_config_errors_are_one_line_and_leave_no_run_folder(
    override: str, expected: list[str], workdir: Path, reenact_cache: Path
) -> None:
    result = train_cli([override], workdir, reenact_cache, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = error_lines(result)
    for text in expected:
        assert text in line, line
    assert not run_folders(workdir), "a run that failed at start-up must not leave its folder"


def test_composition_errors_keep_hydras_reason_and_hint() -> None:
    with pytest.raises(Exception) as caught:
        compose_config("train", ["model.foo=1"])
    assert composition_error_line(caught.value) == (
        "Could not override 'model.foo': Key 'foo' is not in struct (To append to your config use +model.foo=1)")
    with pytest.raises(Exception) as caught:
        compose_config("train", ["model=nope"])
    line = composition_error_line(caught.value)
    assert line.startswith("In 'train': Could not find 'model/nope' (Available options in 'model': ")
    assert "fomm, fomm_vox256, " in line
    assert "search path" not in line


def test_type_errors_name_the_type_in_config_words(tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer.max_epochs=abc", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs: expected int or null, got 'abc'$"):
        check_instantiable(cfg.trainer, "trainer")
    # The key alone, as the start-up check does for each override: other keys may interpolate it.
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs: expected int or null, got 'abc'$"):
        check_key(cfg, "trainer.max_epochs")
    check_key(cfg, "model.lr.generator")  # no _target_ above it: nothing to check against


def test_datamodule_refuses_a_non_positive_batch_size() -> None:
    from reenact.data.datamodule import ReenactDataModule

    for bad in (0, -4):
        with pytest.raises(ConfigError, match=rf"^data.batch_size: expected a positive int, got {bad}$"):
            ReenactDataModule(synthetic={}, batch_size=bad)


def test_a_wrong_value_is_named_where_it_was_set_not_where_it_is_interpolated() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "paths": {"root": 5},
        "node": {"_target_": "reenact.utils.hydra_utils.claim_fresh_dir", "base": "${paths.root}"},
    })
    with pytest.raises(ConfigError, match=r"^paths.root: expected str, got 5 \(used by node.base\)$"):
        check_instantiable(cfg.node, "node")
