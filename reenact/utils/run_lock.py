"""One live run per run folder: an exclusive ``flock`` on ``RUN/.run.lock`` held for the life of the process.

Two runs given the same ``hydra.run.dir`` used to mix silently: the second rewrote ``.hydra/config.yaml``, both
appended to ``csv/metrics.csv`` and either could end up in ``last.ckpt``. The lock is taken before Hydra writes
anything into the folder (:func:`claim_run_dir_from_argv`, called by the training entry point on its command line)
and again by the job itself (:func:`claim_run_dir`: default run folders and sweep jobs), so however close two starts
are, exactly one gets the folder; the other stops with one line. The kernel drops a ``flock`` when its process dies
(``kill -9`` included), so a lock file left by a dead run never blocks a later one: there is no stale claim to clean.
Only the global rank 0 process claims: the other DDP ranks of the same run share its folder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from reenact.errors import ReenactError

LOCK_NAME = ".run.lock"

# run folder (resolved) -> open descriptor holding the lock; kept open (and so locked) until the process exits
_HELD: dict[Path, int] = {}


class RunDirInUseError(ReenactError, RuntimeError):
    """The run folder belongs to a training process that is still running."""


def is_rank_zero() -> bool:
    """Whether this process is (or will be) the global rank 0 of its run, from the launchers' environment."""
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "0") != "0":
            return False
    # Lightning's own launcher starts the other local ranks with LOCAL_RANK set (and no RANK)
    return os.environ.get("LOCAL_RANK", "0") == "0"


def claim_run_dir(run_dir: str | Path) -> None:
    """Lock ``run_dir`` for this process; :class:`RunDirInUseError` (one line) when a live process holds it.

    Idempotent within a process. The folder is created if needed; nothing else in it is touched.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD or not is_rank_zero():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise RunDirInUseError(
            f"hydra.run.dir: {run_dir} is in use by a training run that is still running{who}; wait for it to end "
            f"or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[run_dir] = fd


def holds_run_dir(run_dir: str | Path) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return Path(run_dir).resolve() in _HELD


def explicit_run_dir(argv: list[str]) -> str | None:
    """The folder a ``hydra.run.dir=`` override names, when it is a plain path (no interpolation), else None."""
    value = None
    for arg in argv:
        if arg.startswith(("hydra.run.dir=", "+hydra.run.dir=", "++hydra.run.dir=")):
            value = arg.split("=", 1)[1].strip()
    if not value or "${" in value:
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def claim_run_dir_from_argv(argv: list[str]) -> None:
    """Claim an explicit ``hydra.run.dir=`` before Hydra writes its config and log into it (single runs only)."""
    if any(arg in ("-m", "--multirun") for arg in argv):
        return
    run_dir = explicit_run_dir(argv)
    if run_dir is not None:
        claim_run_dir(run_dir)


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the hidden temporaries that an interrupted checkpoint write left in ``RUN/checkpoints``.

    Called only by the process that holds the folder's lock, so no live writer can own them. Returns what it removed.
    """
    folder = Path(run_dir) / "checkpoints"
    removed = [path for path in folder.glob(".*.tmp") if path.is_file()] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
