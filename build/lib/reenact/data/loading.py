"""The DataLoader the data module hands to Lightning, and what its worker processes do at start-up."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

_INTERRUPTS = {signal.SIGTERM, signal.SIGINT}


def _wait_for_signals() -> None:
    """In a worker: take SIGTERM/SIGINT as they arrive; exit only on the parent's SIGTERM."""
    while True:
        info = signal.sigwaitinfo(_INTERRUPTS)
        if info.si_signo == signal.SIGTERM and info.si_pid == os.getppid():
            # PyTorch's shutdown and multiprocessing's exit handler terminate workers this way; obeying it is
            # what PyTorch's own worker handler does (a quiet exit).
            os._exit(0)


def worker_init(worker_id: int) -> None:
    """Runs first in every DataLoader worker process.

    SIGTERM and SIGINT from anyone but the main process are ignored: a scheduler or Ctrl-C signals the whole
    process group (or every process of the job), and the main process alone decides how to stop (finish the batch,
    save last.ckpt, shut the workers down through the loader). A worker killed by the signal made the main process
    fail with a DataLoader-worker traceback instead. The main process's own SIGTERM still ends a worker: ignoring it
    too would hang the interpreter at exit, where multiprocessing terminates and joins leftover workers. The
    signals are blocked and read in a thread with ``sigwaitinfo``, which, unlike a handler, tells who sent them.

    Then, as Lightning does itself when ``seed_everything(workers=True)`` asked for it (it adds its own
    initialiser only to loaders without one), the global RNGs are seeded per worker and rank.
    """
    # Blocked before the thread starts, so every thread of the worker inherits the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    threading.Thread(target=_wait_for_signals, name="reenact-worker-signals", daemon=True).start()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


class _DeferredIterator:
    """Creates the loader's real iterator on the first ``next()``."""

    def __init__(self, start: Callable[[], Iterator[Any]], length: Callable[[], int]) -> None:
        self._start = start
        self._length = length
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> _DeferredIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)

    def __len__(self) -> int:
        return self._length()


class DeferredStartDataLoader(DataLoader):
    """A DataLoader whose ``iter()`` reads nothing from the sampler until the first batch is asked for.

    With workers, PyTorch's iterator hands the first ``prefetch_factor * num_workers`` batches of indices to the
    workers as soon as it is created. Lightning creates the training iterator once before it calls the sampler's
    ``set_epoch`` (to size the epoch), and when it resumes from a checkpoint it keeps that iterator for the first
    epoch: the resumed epoch then started with the batches of the sampler's previous epoch (epoch 0), and a resumed
    run with workers diverged from the uninterrupted one although ``num_workers=0`` resumed exactly. Deferring the
    start until ``next()`` lets every epoch draw its indices after ``set_epoch``, whatever the number of workers.
    """

    def __iter__(self) -> Iterator[Any]:
        return _DeferredIterator(super().__iter__, self.__len__)
