"""Compose training configs for tests: tiny synthetic data, CPU, outputs under a temporary folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from reenact.utils.hydra_utils import compose_config

TINY_DATA = [
    "data.synthetic.num_train_identities=4",
    "data.synthetic.num_test_identities=2",
    "data.synthetic.clips_per_identity=2",
    "data.synthetic.num_frames=16",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val_videos=2",
    "data.val_max_frames=8",
]

TINY_TRAINER = [
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.limit_train_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.reconstruction_visualizer.log_video=false",
]


# Appended to a ``python train.py`` command line to make it cheap: a tiny synthetic set, one short epoch that still
# validates.
CHEAP_RUN = [
    "data.synthetic.num_train_identities=4",
    "data.synthetic.num_test_identities=2",
    "data.synthetic.clips_per_identity=2",
    "data.synthetic.num_frames=16",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.val_videos=1",
    "data.val_max_frames=4",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.limit_train_batches=2",
]


def train_config(
    output_dir: Path, cache_dir: Path, overrides: Sequence[str] = (), tiny_synthetic: bool = True
) -> DictConfig:
    """A composed ``conf/train.yaml`` whose ${hydra:...} values resolve without @hydra.main."""
    data = TINY_DATA if tiny_synthetic else []
    cfg = compose_config("train", [*data, *TINY_TRAINER, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.paths.root_dir = str(output_dir)
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg
