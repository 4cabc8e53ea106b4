"""The import graph of reenact: every module imports on its own (no cycle), and no import runs up the layers.

The layers, highest first (docs/architecture.md states the rule):

    entry points  >  api, callbacks, export  >  tasks, animation  >  families  >  losses, metrics, convert, prepare
    >  layers, data, face, checkpoints  >  utils  >  errors

A module may import from its own layer and from any layer below it; every import counts, a function-level one too.
"""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "reenact"

# Module prefixes, each with its layer (higher imports lower); the longest matching prefix decides.
LAYERS: dict[str, int] = {
    "reenact.errors": 0,
    "reenact.utils": 1,
    "reenact.layers": 2,
    "reenact.data": 2,
    "reenact.face": 2,
    "reenact.checkpoints": 2,
    "reenact.conf": 2,
    "reenact.losses": 3,
    "reenact.metrics": 3,
    "reenact.convert": 3,
    "reenact.prepare": 3,
    "reenact.families": 4,
    "reenact.tasks": 5,
    "reenact.animation": 5,
    "reenact.api": 6,
    "reenact.callbacks": 6,
    "reenact.export": 6,
    # entry points: the command lines, their `python -m` shims, and the package's lazy top-level names
    "reenact": 7,
    "reenact.cli": 7,
    "reenact.entrypoints": 7,
    "reenact.animate": 7,
    "reenact.evaluate": 7,
    "reenact.info": 7,
    "reenact.warp": 7,
    "reenact.convert.__main__": 7,
    "reenact.export.__main__": 7,
    "reenact.prepare.__main__": 7,
}
LAYER_NAMES = {0: "errors", 1: "utils", 2: "layers/data/face/checkpoints", 3: "losses/metrics/convert/prepare",
               4: "families", 5: "tasks/animation", 6: "api/callbacks/export", 7: "entry points"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def layer_of(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add its prefix to LAYERS (and to docs/architecture.md)"
    return LAYERS[max(matches, key=len)]


def parse(path: Path) -> ast.Module:
    """``ast.parse`` with the garbage collector paused. CPython 3.11 keeps the AST constructor's recursion depth per
    interpreter, not per thread: when a collection in the middle of building the tree runs finalisers and another
    thread (one left by an earlier test in the same pytest worker) parses meanwhile, the depth no longer matches and
    the parse fails with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905; seen once
    here). Without collections no Python code runs inside the constructor, so it cannot hand over to another thread."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if enabled:
            gc.enable()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every reenact import in a file, top-level or inside a function."""
    found = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = module_name(path).split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            # `from reenact.x import y` may name a submodule y: its layer counts too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / (f"{base}.{alias.name}".replace(".", "/") + ".py")).is_file()]
    return [(line, name) for line, name in found if name == "reenact" or name.startswith("reenact.")]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_up_the_layers() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imported_modules(path):
            if layer_of(imported) > layer_of(importer):
                upward.append(f"{path.relative_to(REPO)}:{line}: {importer} ({LAYER_NAMES[layer_of(importer)]}) "
                              f"imports {imported} ({LAYER_NAMES[layer_of(imported)]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "reenact" / "layers" / "example.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from reenact.tasks.reenactment import ReenactmentTask\n")
    found = imported_modules(source)
    assert found == [(2, "reenact.tasks.reenactment")]
    assert layer_of(found[0][1]) > layer_of("reenact.layers.example")


# Imports each module first, in a sys.modules holding no reenact module (third-party packages stay loaded, so the
# pass takes seconds): a cycle shows as "partially initialized module" when the module that closes it comes first.
IMPORT_EACH_FIRST = """
import importlib, json, sys, traceback
modules = json.loads(sys.argv[1])
sys.argv = sys.argv[:1]  # a module that reads the command line at import sees none
failures = {}
for name in modules:
    for loaded in [m for m in sys.modules if m == "reenact" or m.startswith("reenact.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "reenact":
            failures[name] = f"ModuleNotFoundError: {exc}"
        # an optional third-party dependency that is not installed is not a cycle
    except BaseException as exc:
        failures[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
print(json.dumps(failures))
"""


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, json.dumps(MODULES)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}: {error}" for name, error in failures.items())


@pytest.mark.parametrize("module", ["reenact.families.fomm.convert", "reenact.families.liveportrait.convert"])
def test_a_converter_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
