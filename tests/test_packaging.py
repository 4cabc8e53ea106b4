"""A non-editable install carries the configs: the wheel maps the top-level conf/ into the package (reenact/conf), and
an installed copy composes them outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built wheel unpacked into a folder: what a plain ``pip install reenact`` puts in site-packages."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, cwd=wheels)
    wheel = next(wheels.glob("reenact-*.whl"))
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_holds_every_config(installed: Path) -> None:
    def configs(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}

    shipped, in_tree = configs(installed / "reenact" / "conf"), configs(REPO / "conf")
    assert shipped == in_tree and "model/fomm.yaml" in shipped
    for name in in_tree:  # the same files, byte for byte
        assert (installed / "reenact" / "conf" / name).read_bytes() == (REPO / "conf" / name).read_bytes(), name
    assert not (REPO / "reenact" / "conf").exists(), "the configs live in the top-level conf/ only"


def test_an_installed_copy_composes_and_builds_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    code = (
        "import reenact, sys; from pathlib import Path\n"
        f"assert Path(reenact.__file__).is_relative_to({str(installed)!r}), reenact.__file__\n"
        "from reenact.cli.info import main\n"
        "sys.exit(main(['model=liveportrait_small']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "motion_extractor" in done.stdout and "304,934" in done.stdout
