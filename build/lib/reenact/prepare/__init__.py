"""Dataset preprocessing: ``python -m reenact.prepare {voxceleb,talkinghead,folder}`` (see data/README.md)."""

from __future__ import annotations

from reenact.prepare.cli import build_parser, main, run
from reenact.prepare.report import Failure, PrepareReport, PrepareUsageError

__all__ = ["Failure", "PrepareReport", "PrepareUsageError", "build_parser", "main", "run"]
