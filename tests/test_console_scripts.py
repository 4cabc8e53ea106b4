"""Console scripts: one per entry point, each calling the function that ``python -m <module>`` calls."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# script name -> the module that ``python -m`` runs for the same command
SCRIPTS = {
    "reenact-train": "reenact.cli.train",
    "reenact-evaluate": "reenact.evaluate",
    "reenact-animate": "reenact.animate",
    "reenact-prepare": "reenact.prepare",
    "reenact-convert": "reenact.convert",
    "reenact-info": "reenact.info",
    "reenact-warp": "reenact.warp",
    "reenact-export": "reenact.export",
    "reenact-live": "reenact.live",
    "reenact-app": "reenact.app",
}
HELP_TIMEOUT_S = 120  # generous: a loaded 2-core machine imports torch and composes the config in a few seconds


def declared_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and len(node.test.comparators) == 1 and isinstance(node.test.comparators[0], ast.Constant)
            and node.test.comparators[0].value == "__main__")


def main_target(module: str) -> str:
    """``module:function`` for the one function that ``python -m module`` calls, read from the source."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    if spec.submodule_search_locations is not None:  # a package runs its __main__ module
        module = f"{module}.__main__"
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    runs_on_import = module.endswith(".__main__")
    body: list[ast.stmt] = []
    for node in tree.body:
        if is_main_guard(node):
            body += node.body
        elif runs_on_import and isinstance(node, ast.Expr | ast.Raise):
            body.append(node)
    called = {call.func.id for stmt in body for call in ast.walk(stmt)
              if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id != "SystemExit"}
    assert len(called) == 1, f"{module}: expected one function called when run, found {sorted(called)}"
    name = called.pop()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return f"{module}:{name}"
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return f"{node.module}:{original}"
    raise AssertionError(f"{module}: cannot tell where {name} comes from")


def test_every_entry_point_has_a_script_that_calls_what_python_m_calls() -> None:
    declared = declared_scripts()
    assert set(declared) == set(SCRIPTS)
    for script, module in SCRIPTS.items():
        assert declared[script] == main_target(module), script
    installed = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name in SCRIPTS}
    assert installed == declared, "the installed scripts are stale: reinstall with pip install -e ."


def test_every_script_is_installed_and_prints_help(tmp_path: Path) -> None:
    paths = {script: Path(sys.executable).parent / script for script in SCRIPTS}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    assert not missing, f"{missing} missing: reinstall with pip install -e ."
    # all at once: each spends its few seconds importing torch, and they share the cores
    running = {script: subprocess.Popen([str(path), "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
               for script, path in paths.items()}
    failed = {}
    for script, process in running.items():
        try:
            out, err = process.communicate(timeout=HELP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += f"\n(killed after {HELP_TIMEOUT_S} s)"
        if process.returncode != 0 or not out.strip():
            failed[script] = err.strip()[-2000:]
    assert not failed, failed
    assert not any(tmp_path.iterdir()), "--help must not start a run"
