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

# `make test` runs two pytest-xdist workers (one per core of the 2-core target machine): each worker, and every
# subprocess it starts, computes on one thread, so the two never compete for a core. Alone, the suite takes both.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // XDIST_WORKERS)
if XDIST_WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402

torch.set_num_threads(THREADS)

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
