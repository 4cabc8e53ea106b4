"""Shared fixtures. Tests run on CPU, offline, with few threads so the suite fits 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
# Idle OpenMP threads must sleep, not spin: the suite runs subprocesses (DDP, sweeps) beside the main process on
# 2 cores, and spinning threads made torch code several times slower there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = (REPO_ROOT / ".." / "shared" / "data" / "faces").resolve()


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The real talking-head clips; tests using them skip cleanly where the folder is absent."""
    if not FACES_DIR.is_dir() or not any(FACES_DIR.glob("*.mp4")):
        pytest.skip(f"real face clips not found at {FACES_DIR}")
    return FACES_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
