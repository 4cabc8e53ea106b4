"""Checkpoints that are never half-written and never hold NaN/inf weights.

Two pieces, both wired in by the configs (``conf/trainer/default.yaml`` ``plugins``,
``conf/callbacks/model_checkpoint.yaml``):

- ``AtomicCheckpointIO`` writes every checkpoint to a temporary file *in the destination folder*, flushes and
  fsyncs it, then renames it over the target with ``os.replace``. Lightning's own writer stages the file in the
  system temp folder and moves it, which across filesystems is a copy: a kill or a full disk then left a truncated
  file under the checkpoint's name (and a checkpoint-sized orphan in ``$TMPDIR``). A failed write removes its
  temporary and leaves the previous checkpoint untouched. It also refuses, as the last line of defence, any
  checkpoint whose ``state_dict`` holds a NaN or an inf.
- ``FiniteModelCheckpoint`` is Lightning's ``ModelCheckpoint`` that checks the weights and buffers before every
  save and stops training with ``NonFiniteError`` instead of writing a diverged model, agreeing across DDP ranks so
  that no rank waits for a save that another refused. On an exception (``save_on_exception``) it writes nothing
  when the weights are not finite or the exception is itself a ``NonFiniteError``: ``last.ckpt`` then stays the
  last finite state, which is what ``ckpt_path=<run>`` resumes from.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import fsspec.utils
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from reenact.errors import ReenactError
from reenact.utils.finite import DIVERGED_HINT, NonFiniteError, nonfinite_tensors, require_finite, summarise_keys

log = logging.getLogger(__name__)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(ReenactError, OSError):
    """No space left on the file system a run writes to (one line naming it)."""


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding ``path`` (its nearest existing folder)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(exc: OSError, path: str | os.PathLike[str]) -> DiskFullError:
    """A one-line :class:`DiskFullError` for ``exc`` raised while writing ``path``."""
    where = mount_point(path)
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    error = DiskFullError(f"No space left on the disk at {where} ({free}) while writing {path}; free some space")
    error.errno = exc.errno
    return error


def _is_local(path: Any) -> bool:
    return fsspec.utils.get_protocol(str(path)) in ("file", "local")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` so that ``path`` holds either its previous content or the complete new file.

    The temporary sits next to the target (same filesystem, so the final rename is atomic), is created with the
    permissions an ordinary file would get, and is removed when anything fails, a full disk included.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS and not isinstance(exc, DiskFullError):
            raise disk_full_error(exc, path) from None
        raise
    # Make the rename itself durable: without this a power loss can still bring back the old directory entry.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO with an in-folder atomic write and a refusal of non-finite state.

    Remote paths (``s3://`` and the like) keep Lightning's writer: object stores publish an upload whole.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        require_finite(checkpoint.get("state_dict", {}), f"refusing to write {path}")
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


class FiniteModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that refuses to save non-finite weights or buffers (see the module docstring)."""

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        bad = nonfinite_tensors(trainer.lightning_module.state_dict())
        # Every rank calls this; the decision is shared so all ranks stop together (a rank that raised alone
        # would leave the others waiting in the save's barrier).
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            where = summarise_keys(bad) if bad else "tensors on another rank"
            raise NonFiniteError(
                f"non-finite weights at epoch {trainer.current_epoch} step {trainer.global_step}: {where}; "
                f"not saving {Path(filepath).name} (earlier checkpoints are kept); {DIVERGED_HINT}")
        super()._save_checkpoint(trainer, filepath)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Write nothing: the last epoch-end checkpoint is the resume point (see the module docstring).

        Lightning's own handler would save the mid-epoch state (not resumable bit-exactly, and in DDP a save after
        a rank died waits on the dead rank) and print its own "An ... was raised" line before the entry point's.
        """
        if not self.save_on_exception or self._last_global_step_saved == trainer.global_step:
            return
        if isinstance(exception, NonFiniteError) or nonfinite_tensors(pl_module.state_dict()):
            log.info("not saving a checkpoint after %s: the state is not finite; earlier checkpoints are kept",
                     type(exception).__name__)
            return
        log.info("not saving the partial epoch %d after %s: the checkpoints stay at the end of the last complete "
                 "epoch, which resumes exactly", trainer.current_epoch, type(exception).__name__)
