"""A CSV logger that appends to the run's ``csv/metrics.csv`` instead of deleting it (``logger=csv``).

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so resuming a run into its own folder
(``ckpt_path=RUN hydra.run.dir=RUN``) lost the rows of every epoch before the interruption. This one keeps them:
the header grows when new columns appear, and on the first write the old rows at or after the first new step are
dropped, since the resumed run logs those steps again (it repeats the partial epoch the interruption cut short).
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's ExperimentWriter that keeps an existing metrics file and continues it."""

    def __init__(self, log_dir: str) -> None:
        self._continued = False
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])
            self._continued = True

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (Lightning's version deletes ``metrics.csv``)."""

    def save(self) -> None:
        if self._continued and self.metrics:
            self._continued = False
            self._drop_rows_from(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _drop_rows_from(self, step: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for row in rows if not row.get("step") or float(row["step"]) < step]
        if len(kept) == len(rows):
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(kept)


class AppendingCSVLogger(CSVLogger):
    """:class:`lightning.pytorch.loggers.CSVLogger` writing through :class:`AppendingExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
