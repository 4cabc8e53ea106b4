"""Where the Hydra configs live, the resolvers they use, and how the package composes them outside ``@hydra.main``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# The Hydra config tree is the repository's top-level conf/, the one a user reads and edits. A wheel maps it into
# the package as reenact/conf (setup.py), so an installed copy composes the same files.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_CHECKOUT_CONF = _PACKAGE_DIR.parent / "conf"  # a source checkout, or an editable install of one
CONFIG_DIR = _CHECKOUT_CONF if (_CHECKOUT_CONF / "train.yaml").is_file() else _PACKAGE_DIR / "conf"
CONFIG_PATH = str(CONFIG_DIR)  # for @hydra.main (an absolute folder)
VERSION_BASE = "1.3"


def native_cpu_precision() -> str:
    """``bf16-mixed`` where the CPU computes bfloat16 natively (AVX512-BF16 / AMX), else ``32-true``.

    Used by ``trainer=cpu`` as ``${reenact.cpu_precision:}``; the precision of :func:`reenact.utils.speed.recommended`,
    the one rule that animation and ``benchmarks/train_step.py`` read too.
    """
    from reenact.utils.speed import recommended

    return recommended("cpu").precision


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (:func:`reenact.utils.speed.cpu_computes_bf16`)."""
    from reenact.utils.speed import cpu_computes_bf16 as computes

    return computes()


def launch_dir() -> str:
    """The folder the command was started in: ``${reenact.cwd:}``, the root of ``conf/paths``.

    Hydra's own ``${hydra:runtime.cwd}`` is only readable once Hydra has set the config of a job, but every
    multirun launcher (basic, joblib, submitit) resolves ``hydra.sweep.dir`` before that, so a root taken from
    it made each ``-m`` sweep fail. Inside a job Hydra's recorded value is used, which stays right when
    ``hydra.job.chdir=true`` has moved the process into the output folder; before that the process has not
    moved, and its working directory is the launch folder.
    """
    if HydraConfig.initialized():
        cwd = OmegaConf.select(HydraConfig.get(), "runtime.cwd", default=None)
        if cwd:
            return str(cwd)
    return os.getcwd()


# Folders this process created through ``${reenact.fresh_dir:...}`` (absolute), so the training entry point
# only ever removes a folder that it made itself.
_CLAIMED_DIRS: set[Path] = set()


def claim_fresh_dir(base: str) -> str:
    """Create and return the folder ``base``, or ``base_1``, ``base_2``, ... if that name is taken.

    Used as ``${reenact.fresh_dir:${paths.log_dir}/.../${now:%Y-%m-%d_%H-%M-%S}}`` for Hydra's run and sweep
    folders. ``os.mkdir`` fails when the folder exists, so it claims a name atomically: runs started in the
    same second (or by several users of a shared file system) each get their own folder instead of mixing
    checkpoints, metrics and logs in one. The resolver is registered with ``use_cache=True``: Hydra resolves
    these keys several times per run (and copies the cache into every job of a sweep, also across processes
    through pickling), and each must see the folder claimed the first time.
    """
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = base, 0
    while True:
        try:
            os.mkdir(candidate)
        except FileExistsError:
            suffix += 1
            candidate = f"{base}_{suffix}"
            continue
        _CLAIMED_DIRS.add(Path(candidate).resolve())
        return candidate


def claimed_by_this_process(path: str | Path) -> bool:
    """Whether ``path`` was created by :func:`claim_fresh_dir` in this process."""
    return Path(path).resolve() in _CLAIMED_DIRS


# Registered at import: every module that composes our configs imports this one first.
if not OmegaConf.has_resolver("reenact.cpu_precision"):
    OmegaConf.register_new_resolver("reenact.cpu_precision", native_cpu_precision)
if not OmegaConf.has_resolver("reenact.cwd"):
    OmegaConf.register_new_resolver("reenact.cwd", launch_dir)
if not OmegaConf.has_resolver("reenact.fresh_dir"):
    OmegaConf.register_new_resolver("reenact.fresh_dir", claim_fresh_dir, use_cache=True)


def compose_config(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides (used by tests and small CLIs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=VERSION_BASE):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def instantiate_collection(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-nodes group (callbacks, loggers); ``null`` -> []."""
    if cfg is None:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """A resolved, plain-dict copy that can go into a weights-only checkpoint or a logger."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    return container


def composition_error_line(exc: BaseException) -> str:
    """One line from a Hydra override or composition error, keeping its reason and its hint.

    Hydra spreads these over several lines and puts the reason in the cause, e.g. ``Could not override
    'model.foo'.`` / ``To append to your config use +model.foo=1`` with the cause ``Key 'foo' is not in struct``.
    The result is ``Could not override 'model.foo': Key 'foo' is not in struct (To append to your config use
    +model.foo=1)``; an indented list (the available options of a group) is joined with commas, and the
    config search path that Hydra appends is left out.
    """
    parts: list[str] = []
    for raw in str(exc).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Config search path:"):
            break
        if raw[:1].isspace() and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line)
    if not parts:
        return type(exc).__name__
    head = parts[0].rstrip(".")
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), "") if cause else ""
    if reason and reason not in head:
        head = f"{head}: {reason}"
    return f"{head} ({'; '.join(parts[1:])})" if len(parts) > 1 else head


def first_sweep_combination(overrides: Sequence[str]) -> tuple[list[str], bool]:
    """The overrides of a sweep's first job, and whether any override sweeps.

    ``a=1,2``, ``a=choice(1,2)`` and ``a=range(1,3)`` become ``a=1``. Sweeps that only the sweeper can expand
    (Optuna's ``interval(...)``, ``glob(...)``) are left out. Raises Hydra's parse error for a malformed override.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first: list[str] = []
    sweeps = False
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        sweeps = True
        try:
            value = next(iter(override.sweep_string_iterator()), None)
        except Exception:  # interval and glob sweeps cannot be enumerated here
            continue
        if value is not None:
            first.append(f"{override.get_key_element()}={value}")
    return first, sweeps


def value_override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys that ``key=value`` / ``+key=value`` overrides set (not group choices, deletions, packages)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))
            if not o.is_delete() and o.package is None and "/" not in o.key_or_group]


def refuse_reused_run_dir(output_dir: str | Path, ckpt_path: str | None, overwrite: bool) -> None:
    """Stop when the run folder already holds checkpoints of another run, unless that run is being resumed.

    Fresh folders come from :func:`claim_fresh_dir`; this guards an explicit ``hydra.run.dir=`` (or a re-used
    ``hydra.sweep.dir=``), where a new run would otherwise mix its checkpoints with the old ones and
    ``save_top_k`` could delete the other run's best checkpoint. Resuming (``ckpt_path`` inside that folder)
    and ``overwrite=true`` are the explicit choices that allow it.
    """
    from reenact.utils.config_check import ConfigError

    output_dir = Path(output_dir).resolve()
    found = sorted((output_dir / "checkpoints").glob("*.ckpt"))
    if not found or overwrite:
        return
    if ckpt_path:
        resumed = Path(ckpt_path).resolve()
        if resumed == output_dir or output_dir in resumed.parents:
            return
    raise ConfigError(
        f"hydra.run.dir: {output_dir} already holds another run's checkpoints ({len(found)} in checkpoints/); "
        f"resume it with ckpt_path={output_dir}, choose another folder, or pass overwrite=true to train over them"
    )


def remove_unused_run_dir(output_dir: str | Path, hydra_files: set[str]) -> bool:
    """Delete a run folder that this process created if the run wrote nothing into it; returns whether it did.

    A run that stops at start-up (a config error) leaves only Hydra's ``hydra_files`` (``.hydra/`` and the
    log); keeping such folders buries the real runs. Only folders claimed by :func:`claim_fresh_dir` in this
    process, or a sweep job's folder inside one, are touched, so an explicit ``hydra.run.dir=`` is never
    deleted; a sweep folder left with nothing but ``multirun.yaml`` goes too.
    """
    output_dir = Path(output_dir).resolve()
    owner = next((d for d in (output_dir, output_dir.parent) if claimed_by_this_process(d)), None)
    if owner is None or not output_dir.is_dir():
        return False
    if any(entry.name not in hydra_files for entry in output_dir.iterdir()):
        return False
    shutil.rmtree(output_dir, ignore_errors=True)
    if owner != output_dir and all(entry.name == "multirun.yaml" for entry in owner.iterdir()):
        shutil.rmtree(owner, ignore_errors=True)
    return True


def override_syntax_error(argv: Sequence[str]) -> str | None:
    """One line for the first command-line override that Hydra's grammar cannot parse, with how to quote it.

    Hydra's own report is five lines (a lexer exception, a caret, a link) and exit status 1. The usual cause is a
    path with a space (the shell splits ``source=my photo.jpg`` in two) or with letters outside ASCII, which Hydra
    only takes quoted: ``"source='my photo.jpg'"``. Options (``-m``, ``--cfg job``...) are skipped.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    args = list(argv)
    for index, arg in enumerate(args):
        if arg.startswith("-") or (index > 0 and args[index - 1] in ("--cfg", "-c", "--package", "-p",
                                                                      "--config-name", "-cn", "--config-path",
                                                                      "-cp", "--config-dir", "-cd", "--info", "-i")):
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:
            previous = args[index - 1] if index > 0 else ""
            if "=" not in arg and "=" in previous and not previous.startswith("-"):
                # the shell split a value at a space: show the two words joined and quoted
                key, value = previous.split("=", 1)
                value = f"{value} {arg}"
                what = f"'{arg}' is not key=value: the value of {key} seems to hold a space"
            elif "=" in arg:
                key, value = arg.split("=", 1)
                what = f"cannot parse the override '{arg}'"
            else:
                return f"'{arg}' is not an override (key=value)"
            value = value.strip("'\"").replace("'", "\\'")
            return f"{what}; quote a value with spaces, non-ASCII letters or brackets: \"{key}='{value}'\""
    return None

