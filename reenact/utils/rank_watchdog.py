"""A dead DDP rank stops the others within seconds, with one line naming it (instead of a 30-minute hang).

With Lightning's own launcher (``trainer=ddp`` on one machine) rank 0 starts the other ranks as child processes.
Each process runs a watchdog thread during ``trainer.fit``:

- rank 0 polls its children (this replaces Lightning's child-process observer, which SIGKILLed rank 0 itself five
  seconds after a child died, with no word on why);
- every other rank watches its parent, rank 0: when rank 0 dies the child is re-parented.

When a peer is gone, the surviving ranks usually fail at once in their next collective (gloo and NCCL see the closed
connection); :func:`watch_ranks` turns that failure into :class:`RankDiedError`, one line naming the dead rank, its
pid and how it ended. A rank that is not in a collective (or one that blocks without failing) is ended by the
watchdog itself after ``grace`` seconds, with the same line and exit status 1. The run resumes from its last
epoch-end checkpoint (``ckpt_path=RUN``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from reenact.errors import ReenactError


class RankDiedError(ReenactError, RuntimeError):
    """Another process of this DDP run died; this rank stopped too."""


_report_lock = threading.Lock()
_reported = False


def claim_report() -> bool:
    """True once per process: the caller prints the one line about the dead rank (main thread or watchdog)."""
    global _reported
    with _report_lock:
        first = not _reported
        _reported = True
        return first


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Watchdog(threading.Thread):
    """Polls the peers this rank can see; records the first death and, after ``grace`` seconds, ends the process."""

    def __init__(self, rank: int, children: list[subprocess.Popen] | None, parent_pid: int | None,
                 poll: float, grace: float, hint: str) -> None:
        super().__init__(daemon=True, name="reenact-rank-watchdog")
        self.rank = rank
        self.children = children
        self.parent_pid = parent_pid
        self.poll = poll
        self.grace = grace
        self.hint = hint
        self.death: str | None = None
        self.stopped = threading.Event()

    def check(self) -> str | None:
        """The line describing the first dead peer, or None while all are alive."""
        if self.death is not None:
            return self.death
        if self.children is not None:
            for local_rank, proc in enumerate(self.children, start=1):
                if proc.poll() is not None and proc.returncode != 0:
                    self.death = (f"rank {self.rank + local_rank} (pid {proc.pid}) {_how(proc.returncode)}; "
                                  f"rank {self.rank} stopped the run")
                    for other in self.children:  # the others would wait on the dead rank in their next collective
                        if other.poll() is None:
                            other.kill()
                    break
        elif self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.death = f"rank 0 (pid {self.parent_pid}) died; rank {self.rank} stopped the run"
        return self.death

    def wait_for_death(self, timeout: float) -> str | None:
        """Check for ``timeout`` seconds: a collective can fail a moment before the dead process is reaped."""
        deadline = time.monotonic() + timeout
        while self.check() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.death

    def run(self) -> None:
        while not self.stopped.wait(self.poll):
            if self.check() is None:
                continue
            # the main thread normally fails in its next collective and reports; a rank that does not is ended here
            if self.stopped.wait(self.grace):
                return
            if claim_report():
                print(f"error: RankDiedError: {self.death}{self.hint}", file=sys.stderr, flush=True)
            os._exit(1)


def _launched_by_lightning() -> bool:
    """A non-zero local rank started by Lightning's subprocess launcher (not torchrun, SLURM or the like)."""
    external = ("TORCHELASTIC_RUN_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "JSM_NAMESPACE_RANK")
    return os.environ.get("LOCAL_RANK", "0") != "0" and not any(name in os.environ for name in external)


@contextlib.contextmanager
def watch_ranks(trainer: Any, hint: str = "", poll: float = 0.5, grace: float = 20.0) -> Iterator[None]:
    """Around ``trainer.fit``: a dead peer rank becomes :class:`RankDiedError` (see the module docstring).

    ``hint`` ends the line (how to resume).
    """
    if getattr(trainer, "world_size", 1) <= 1:
        yield
        return
    from lightning.pytorch.strategies.launchers import subprocess_script

    watchdogs: list[_Watchdog] = []
    original = subprocess_script._launch_process_observer

    def observe(children: list[subprocess.Popen]) -> None:
        watchdog = _Watchdog(0, children, None, poll, grace, hint)
        watchdogs.append(watchdog)
        watchdog.start()

    subprocess_script._launch_process_observer = observe
    if _launched_by_lightning():
        watchdog = _Watchdog(int(os.environ["LOCAL_RANK"]), None, os.getppid(), poll, grace, hint)
        watchdogs.append(watchdog)
        watchdog.start()
    try:
        yield
    except Exception:  # not SystemExit / KeyboardInterrupt: an interrupt ends every rank on purpose
        death = next((line for w in watchdogs if (line := w.wait_for_death(3.0))), None)
        if death is not None:
            raise RankDiedError(f"{death}{hint}") from None
        raise
    finally:
        subprocess_script._launch_process_observer = original
        for watchdog in watchdogs:
            watchdog.stopped.set()
