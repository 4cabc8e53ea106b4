"""Every single-run ``python train.py ...`` line of README.md composes and builds its model exactly as written.

Sweeps (``-m``) run in tests/test_reliability_cli.py; full training runs are covered by the training tests. Here each
documented override must name real keys and build: a renamed config key breaks this test, not a user's command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from reenact.utils.hydra_utils import compose_config, to_plain

REPO = Path(__file__).resolve().parents[1]


def readme_single_runs() -> list[list[str]]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    lines = [shlex.split(line, comments=True)[2:] for line in text.splitlines() if line.startswith("python train.py ")]
    return [args for args in lines if "-m" not in args]


RUNS = readme_single_runs()


def test_the_readme_documents_single_runs() -> None:
    assert len(RUNS) >= 10


@pytest.mark.parametrize("args", RUNS, ids=[" ".join(a) or "(defaults)" for a in RUNS])
def test_readme_train_line_composes_and_builds_its_model(args: list[str]) -> None:
    # placeholders such as <run> stand for the user's own run folder
    overrides = [a.replace("<run>", "RUN") for a in args if not a.startswith("hydra.")]
    cfg = compose_config("train", [*overrides, "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    model = cfg.model
    with open_dict(model):
        for term in (model.objective.terms or {}).values():
            if term is not None and term.get("vgg_pretrained"):
                term.vgg_pretrained = False  # the ImageNet download is not what this test checks
    to_plain(cfg)  # every interpolation resolves
    task = instantiate(model, _partial_=True)(model_config=to_plain(model), data_config=to_plain(cfg.data))
    assert task.network.family == model.family


# ``python -m reenact.<entry>`` lines: Hydra entry points compose their own config with the line's arguments exactly
# as written (a renamed key or group fails here); argparse entry points parse them.
HYDRA_ENTRIES = {"evaluate": "evaluate", "animate": "animate", "warp": "warp", "export": "export", "info": "train",
                 "live": "live", "app": "app"}


def readme_module_lines() -> list[tuple[str, list[str]]]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    found = []
    for line in text.splitlines():
        if line.startswith("python -m reenact."):
            words = shlex.split(line, comments=True)
            found.append((words[2].removeprefix("reenact."), words[3:]))
    return found


MODULE_LINES = readme_module_lines()


def test_the_readme_documents_every_entry_point() -> None:
    assert {entry for entry, _ in MODULE_LINES} >= {*HYDRA_ENTRIES, "prepare"}


@pytest.mark.parametrize("entry,args", MODULE_LINES, ids=[f"{e} {' '.join(a)}" for e, a in MODULE_LINES])
def test_readme_module_line_composes_or_parses(entry: str, args: list[str]) -> None:
    args = [a.replace("<run>", "RUN") for a in args]
    if entry in HYDRA_ENTRIES:
        if entry in ("animate", "live"):  # what their main does first: a family's own options given by name
            from reenact.cli.animate import family_option_overrides

            args = family_option_overrides(args, entry)
        cfg = compose_config(HYDRA_ENTRIES[entry], [*args, "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
        for arg in args:  # each documented value reached the config as written
            key, _, value = arg.partition("=")
            if "." not in key and key in cfg and not OmegaConf.is_config(cfg[key]) and "[" not in value:
                assert str(cfg[key]) == value or (isinstance(cfg[key], bool) and str(cfg[key]).lower() == value)
    else:
        assert entry == "prepare", f"python -m reenact.{entry}: no test knows how to check this entry point"
        from reenact.cli.prepare import build_parser

        build_parser().parse_args(args)


# ``python benchmarks/<name>.py`` lines: the benchmark's own argument parser accepts them as written.
def readme_benchmark_lines() -> list[tuple[str, list[str]]]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    return [(words[1], words[2:]) for words in (shlex.split(line, comments=True) for line in text.splitlines()
                                                if line.startswith("python benchmarks/"))]


BENCHMARK_LINES = readme_benchmark_lines()


def test_the_readme_shows_the_speed_benchmarks() -> None:
    assert {script for script, _ in BENCHMARK_LINES} >= {"benchmarks/train_step.py", "benchmarks/animate_fps.py"}


@pytest.mark.parametrize("script,args", BENCHMARK_LINES, ids=[f"{s} {' '.join(a)}" for s, a in BENCHMARK_LINES])
def test_readme_benchmark_line_parses(script: str, args: list[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_parser().parse_args(args)
