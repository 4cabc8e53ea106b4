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
from omegaconf import open_dict

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
