"""Handing freed C-heap memory back during long animation passes (reenact/utils/heap.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from reenact.animation.pipeline import Animator, encode_driving
from reenact.utils import heap
from reenact.utils.hydra_utils import compose_config


def test_the_trimmer_releases_once_every_n_frames() -> None:
    calls = []
    trimmer = heap.HeapTrimmer(every=10, release=lambda: calls.append(1) or True)
    for frames in (4, 4, 4, 4, 4, 9):  # 12 -> release, 8, then 17 -> release
        trimmer.advance(frames)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="every must be >= 1"):
        heap.HeapTrimmer(every=0)


# run in a fresh interpreter: in the test process, other tests' freed memory would be reused and hide the growth
FRAGMENTATION = """
import json, os
from reenact.utils.heap import release_freed_memory
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident_mb()
large, kept = [], []
for _ in range(2000):
    large.append(b"\\x01" * 60_000)
    kept.append(b"\\x02" * 600)
grown = resident_mb() - before
del large
freed = resident_mb() - before
release_freed_memory()
print(json.dumps({"grown": grown, "freed": freed, "released": resident_mb() - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or heap._malloc_trim() is None,
                    reason="malloc_trim is glibc's (Linux)")
def test_fragmented_free_memory_goes_back_to_the_system() -> None:
    # 60 kB blocks come from the heap (below glibc's mmap threshold); a small block kept after each one pins the
    # heap, so freeing the large ones alone does not shrink the process: what the animation passes did
    out = subprocess.run([sys.executable, "-c", FRAGMENTATION], check=True, capture_output=True, text=True)
    resident = json.loads(out.stdout.strip().splitlines()[-1])
    assert resident["grown"] > 80
    assert resident["freed"] > 0.25 * resident["grown"]  # what stays without the release
    assert resident["released"] < 0.25 * resident["grown"]


def test_both_animation_passes_release_as_they_go(monkeypatch: pytest.MonkeyPatch) -> None:
    releases = []
    monkeypatch.setattr(heap.HeapTrimmer.__init__, "__defaults__", (4, lambda: releases.append(1) or True))
    cfg = compose_config("train", ["model=fomm", "paths.root_dir=/tmp", "paths.output_dir=/tmp/heap"])
    network = instantiate(cfg.model.network).eval()
    frames = torch.rand(12, 3, 64, 64)
    motion = encode_driving(network, iter(frames.split(3)), total=12)
    assert len(releases) == 2  # batches of 3 against every 4 frames: after frames 6 and 12
    releases.clear()
    outputs = list(Animator(network, frames[0]).render_batches(motion, 0, batch_size=4))
    assert len(outputs) == 3 and len(releases) == 3
