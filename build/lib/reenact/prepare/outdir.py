"""The output folder of a preprocessing run: checked writable before any work, kept free of stale temporaries.

Every file ``prepare`` writes (clips, frame folders, side files, manifests) is first written under a hidden
temporary name next to its final one and renamed when complete. A run that is killed leaves those behind;
:func:`output_folder` removes them when a run starts, when it finishes and when it fails. It only does so while
it holds ``OUT_DIR/.prepare/lock``, so a second ``prepare`` writing into the same folder at the same time never
has its files in progress deleted (it then leaves the cleaning to the run that holds the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from reenact.prepare.report import PrepareUsageError

log = logging.getLogger(__name__)

STATE_DIR = ".prepare"
# The hidden names of files being written: ``.{name}.{8 hex}.tmp`` (clips, frame folders, side files; see
# reenact.data.video_writer and reenact.prepare.clips) and ``.{name}.tmp{pid}`` (manifests, reenact.prepare.tasks).
TEMPORARY_NAME = re.compile(r"^\..+\.(?:[0-9a-f]{8}\.tmp|tmp\d+)$")


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove that files can be created in it, before any slow work starts.

    A write probe rather than ``os.access``: permission bits say nothing about read-only mounts, and as root
    ``os.access`` reports every folder writable.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepareUsageError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-test."):
            pass
    except OSError as exc:
        raise PrepareUsageError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None


def temporaries(out_dir: Path) -> list[Path]:
    """Hidden temporaries in the folders ``prepare`` writes to: ``OUT_DIR`` itself, each of its subfolders (the
    splits) and the subfolders of ``OUT_DIR/.prepare`` (manifests). Clip folders are not descended into."""
    folders = [out_dir]
    for parent in (out_dir, out_dir / STATE_DIR):
        with contextlib.suppress(OSError):
            folders += [p for p in parent.iterdir() if p.is_dir() and not TEMPORARY_NAME.match(p.name)]
    found = []
    for folder in folders:
        with contextlib.suppress(OSError):
            found += [p for p in folder.iterdir() if TEMPORARY_NAME.match(p.name)]
    return sorted(found)


def clean_temporaries(out_dir: Path) -> int:
    """Delete the temporaries :func:`temporaries` finds; returns how many were removed."""
    removed = 0
    for path in temporaries(out_dir):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError as exc:
            log.warning("could not remove the stale temporary %s: %s", path, exc.strerror or exc)
    return removed


@contextlib.contextmanager
def output_folder(out_dir: Path) -> Iterator[bool]:
    """Check ``out_dir`` is writable, then hold its lock for the run and clean temporaries at start and at the end,
    whether the run finishes or fails. Yields whether this run holds the lock (and so did the cleaning)."""
    check_writable(out_dir)
    state = out_dir / STATE_DIR
    state.mkdir(exist_ok=True)
    descriptor = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            owner = True
        except BlockingIOError:
            owner = False
            log.warning("another prepare is writing into %s; leaving its temporary files alone", out_dir)
        if owner:
            removed = clean_temporaries(out_dir)
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out_dir)
        try:
            yield owner
        finally:
            if owner:
                clean_temporaries(out_dir)
    finally:
        os.close(descriptor)  # closing releases the lock
