"""Video reading (``reenact.data.video``) and writing (``reenact.data.video_writer``) are independent modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import reenact.data.video
import reenact.data.video_writer

MODULES = {"reenact.data.video": reenact.data.video, "reenact.data.video_writer": reenact.data.video_writer}


def imported_modules(path: Path) -> set[str]:
    """Every module named by an ``import`` or ``from ... import`` statement at the top level of ``path``."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_neither_video_module_imports_the_other() -> None:
    for name, module in MODULES.items():
        others = set(MODULES) - {name}
        assert not imported_modules(Path(module.__file__)) & others, f"{name} imports {others}"


def test_each_video_module_imports_alone_in_a_fresh_interpreter() -> None:
    for name in MODULES:
        other = (set(MODULES) - {name}).pop()
        code = f"import sys, {name}; assert {other!r} not in sys.modules, 'importing {name} loaded {other}'"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_both_modules_raise_the_same_video_error(tmp_path: Path) -> None:
    from reenact.data.video_errors import VideoError

    assert reenact.data.video.VideoError is VideoError
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match="missing.mp4") as reading:
        reenact.data.video.probe_video(missing)
    with pytest.raises(VideoError, match="missing.mp4") as writing:
        reenact.data.video_writer.write_video(tmp_path / "out.mp4", [], 25, audio_source=missing)
    assert "\n" not in str(reading.value) + str(writing.value)
    assert not any(tmp_path.iterdir())
