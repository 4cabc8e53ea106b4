"""Turn Lightning's handling of SIGTERM and Ctrl-C into one line that says how to resume, and a failing exit code."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException


def interruption_message(epoch: int, run_dir: str | Path) -> str:
    """The line printed when a run stops early: where it was and how to continue it.

    ``last.ckpt`` is only written at epoch ends (not on the interrupt: see reenact.callbacks.checkpointing), so a
    resume repeats the partial epoch and continues exactly as an uninterrupted run would.
    """
    if (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
        return (f"interrupted at epoch {epoch}; last.ckpt holds the end of the last complete epoch; "
                f"resume with ckpt_path={run_dir}")
    return f"interrupted at epoch {epoch}; no checkpoint was written to {run_dir}"


@contextmanager
def report_interruption(trainer: Any, run_dir: str | Path) -> Iterator[None]:
    """Around ``trainer.fit``/``validate``: an interrupted run prints one line and exits 143 (SIGTERM) or 130 (SIGINT).

    On SIGTERM Lightning finishes the current batch, runs the ``on_exception`` hooks (which keep ``last.ckpt`` at
    the last epoch end) and raises ``SIGTERMException``, a ``SystemExit`` with no code, which would exit 0
    and make schedulers and scripts take a killed run for a finished one. After Ctrl-C it calls ``sys.exit(1)``.
    The codes 128 + signal follow the shell's convention for a process ended by that signal, which SLURM and job scripts
    recognise. Any other SystemExit passes through unchanged.
    """
    try:
        yield
    except SystemExit as exc:
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        if trainer.is_global_zero:
            print(interruption_message(trainer.current_epoch, run_dir), file=sys.stderr, flush=True)
        received = signal.SIGTERM if isinstance(exc, SIGTERMException) else signal.SIGINT
        raise SystemExit(128 + received) from None
