"""Dataset preprocessing: cutting face clips from raw videos (command line: :mod:`reenact.cli.prepare`,
``python -m reenact.prepare {voxceleb,talkinghead,folder}``; see data/README.md)."""

from __future__ import annotations

from reenact.prepare.report import Failure, PrepareReport, PrepareUsageError

__all__ = ["Failure", "PrepareReport", "PrepareUsageError"]
