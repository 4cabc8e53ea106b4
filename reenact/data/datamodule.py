"""`ReenactDataModule`: training pairs and validation videos from a clip folder or the built-in synthetic set.

Every constructor argument is a plain value so that a Hydra YAML file maps onto it one to one, e.g.::

    _target_: reenact.data.datamodule.ReenactDataModule
    synthetic: {num_train_identities: 12, num_test_identities: 4, clips_per_identity: 4, num_frames: 32}
    frame_size: 64

`batch_size` is the global batch size; each device loads `batch_size / world_size` samples.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from reenact.data.augmentation import IBUG68_FLIP_PERMUTATION, Augmentation
from reenact.data.datasets import DatasetError, PairDataset, VideoDataset, scan_clips
from reenact.data.loading import DeferredStartDataLoader, worker_init
from reenact.data.sampling import EpochSampler
from reenact.data.synthetic import COMPLETE_MARKER, ensure_synthetic_dataset
from reenact.utils.config_check import ConfigError

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    return str(Path(os.environ.get("REENACT_CACHE_DIR", "~/.cache/reenact")).expanduser() / "synthetic")


@dataclass
class SyntheticSpec:
    """Parameters of the generated dataset (see `reenact.data.synthetic.ensure_synthetic_dataset`)."""

    num_train_identities: int = 12
    num_test_identities: int = 4
    clips_per_identity: int = 4
    num_frames: int = 32
    resolution: int = 64
    fps: float = 25.0
    seed: int = 0
    cache_dir: str | None = None  # None: $REENACT_CACHE_DIR/synthetic or ~/.cache/reenact/synthetic

    @staticmethod
    def from_any(value: SyntheticSpec | dict[str, Any] | Any) -> SyntheticSpec:
        if isinstance(value, SyntheticSpec):
            return value
        items = dict(value.items())  # a dict or an OmegaConf DictConfig
        unknown = set(items) - {f.name for f in fields(SyntheticSpec)}
        if unknown:
            raise ValueError(f"unknown synthetic dataset keys {sorted(unknown)}")
        return SyntheticSpec(**items)

    def ensure(self) -> Path:
        return ensure_synthetic_dataset(
            self.cache_dir or default_cache_dir(), resolution=self.resolution,
            num_train_identities=self.num_train_identities, num_test_identities=self.num_test_identities,
            clips_per_identity=self.clips_per_identity, num_frames=self.num_frames, fps=self.fps, seed=self.seed)


def split_identities(identities: list[str], test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split by identity, so no identity appears in both parts."""
    order = sorted(identities)
    if len(order) < 2:
        return order, order
    permuted = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    num_test = min(max(1, round(test_fraction * len(order))), len(order) - 1)
    return sorted(permuted[num_test:]), sorted(permuted[:num_test])


class ReenactDataModule(LightningDataModule):
    def __init__(
        self,
        root: str | None = None,
        synthetic: SyntheticSpec | dict | None = None,
        frame_size: int = 64,
        batch_size: int = 8,
        num_workers: int = 2,
        num_repeats: int = 1,
        id_sampling: bool = True,
        augment: bool = True,
        time_flip_p: float = 0.5,
        horizontal_flip_p: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.1,
        shape_scale: float = 0.0,
        shape_shift: float = 0.0,
        shape_zoom: float = 0.0,
        val_videos: int | None = 4,
        val_max_frames: int | None = 32,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        cache_mb: float = 0.0,
        seed: int = 0,
        num_sources: int = 1,
    ) -> None:
        """``num_sources``: source frames per training pair (batch key ``sources`` (B, S, 3, H, W) when > 1), for
        families that render from several source images of one person. ``pin_memory`` None pins batches exactly
        when the trainer runs on CUDA (faster host-to-device copies; pinning buys nothing on a CPU run)."""
        super().__init__()
        if isinstance(num_sources, bool) or not isinstance(num_sources, int) or num_sources < 1:
            raise ConfigError(f"data.num_sources: expected a positive int, got {num_sources!r}")
        self.num_sources = num_sources
        if (root is None) == (synthetic is None):
            raise ValueError("ReenactDataModule needs exactly one of `root` (a clip folder) or `synthetic`")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            # Checked here, at start-up, rather than by the DataLoader after the data has been prepared.
            raise ConfigError(f"data.batch_size: expected a positive int, got {batch_size!r}")
        self.root = root
        self.synthetic = SyntheticSpec.from_any(synthetic) if synthetic is not None else None
        self.frame_size = frame_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_repeats = num_repeats
        self.id_sampling = id_sampling
        self.augment = augment
        self.augmentation_args = dict(time_flip_p=time_flip_p, horizontal_flip_p=horizontal_flip_p,
                                      brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                                      shape_scale=shape_scale, shape_shift=shape_shift, shape_zoom=shape_zoom)
        self.val_videos = val_videos
        self.val_max_frames = val_max_frames
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.cache_mb = cache_mb
        self.seed = seed
        self.batch_size_per_device = batch_size
        self.data_dir: Path | None = None
        self.train_set: PairDataset | None = None
        self.val_set: VideoDataset | None = None
        self.test_set: VideoDataset | None = None
        self.save_hyperparameters(ignore=["synthetic"])
        self.hparams["synthetic"] = asdict(self.synthetic) if self.synthetic is not None else None

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup, so generation is not raced by the ranks.
        if self.synthetic is not None:
            self.synthetic.ensure()
        elif not Path(self.root).expanduser().is_dir():
            raise DatasetError(f"dataset folder not found: {Path(self.root).expanduser()}")

    def _folders(self) -> tuple[Path, Path, list[str] | None, list[str] | None]:
        """(train folder, test folder, train identities, test identities); identities None = all."""
        data_dir = self.synthetic.ensure() if self.synthetic is not None else Path(self.root).expanduser()
        if not data_dir.is_dir():
            raise DatasetError(f"dataset folder not found: {data_dir}")
        self.data_dir = data_dir
        if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
            return data_dir / "train", data_dir / "test", None, None
        identities = sorted({c.identity for c in scan_clips(data_dir, min_frames=2)})
        train_ids, test_ids = split_identities(identities)
        if train_ids == test_ids:
            log.warning("%s holds a single identity; validating on the training identity", data_dir)
        return data_dir, data_dir, train_ids, test_ids

    def _landmark_flip_permutation(self, dataset: PairDataset) -> list[int] | None:
        """Mirror pairing of the landmarks: from the folder's dataset.json, else iBUG for 68 points, else none."""
        meta = self.data_dir / COMPLETE_MARKER if self.data_dir is not None else None
        if meta is not None and meta.is_file():
            return json.loads(meta.read_text()).get("landmark_flip_permutation")
        if dataset.with_landmarks:
            count = np.load(dataset.clips[0].landmarks, mmap_mode="r").shape[1]
            if count == len(IBUG68_FLIP_PERMUTATION):
                return list(IBUG68_FLIP_PERMUTATION)
            log.warning("no landmark mirror pairing known for %d points: a flip mirrors x but keeps the order", count)
        return None

    def setup(self, stage: str | None = None) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the number of devices {world_size}")
        self.batch_size_per_device = self.batch_size // world_size
        if self.train_set is not None:
            return
        train_dir, test_dir, train_ids, test_ids = self._folders()
        self.train_set = PairDataset(train_dir, self.frame_size, self.id_sampling, self.num_repeats, None,
                                     identities=train_ids, seed=self.seed, cache_mb=self.cache_mb,
                                     num_sources=self.num_sources)
        if self.augment:
            self.train_set.augmentation = Augmentation(
                **self.augmentation_args, landmark_flip_permutation=self._landmark_flip_permutation(self.train_set))
        self.val_set = VideoDataset(test_dir, self.frame_size, self.val_max_frames, self.val_videos, test_ids)
        self.test_set = VideoDataset(test_dir, self.frame_size, None, None, test_ids)
        log.info(self.describe())

    @property
    def pins_memory(self) -> bool:
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = getattr(self, "trainer", None)
        root_device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        return root_device is not None and root_device.type == "cuda"

    def _loader(self, dataset: Any, batch_size: int, drop_last: bool, sampler: Any = None) -> DataLoader:
        # DeferredStartDataLoader: the first indices are drawn after Lightning's set_epoch, so a run resumed with
        # workers is bit-exact; worker_init leaves SIGTERM/SIGINT to the main process (see reenact.data.loading).
        return DeferredStartDataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=self.num_workers,
            pin_memory=self.pins_memory, persistent_workers=self.persistent_workers and self.num_workers > 0,
            worker_init_fn=worker_init if self.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set)
        drop_last = len(dataset) > self.batch_size_per_device
        # EpochSampler shuffles by (seed, epoch) and splits across DDP ranks itself (trainer/ddp.yaml turns
        # Lightning's sampler replacement off), so a resumed run sees exactly the batches it would have seen.
        sampler = EpochSampler(len(dataset), seed=self.seed, shuffle=True)
        return self._loader(dataset, self.batch_size_per_device, drop_last, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set), 1, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_set), 1, False)

    @staticmethod
    def _require(dataset: Any) -> Any:
        if dataset is None:
            raise RuntimeError("ReenactDataModule.setup() must run before asking for a dataloader")
        return dataset

    def describe(self) -> str:
        source = f"synthetic {self.synthetic.resolution}px" if self.synthetic else "folder"
        text = f"data: {source} {self.data_dir or self.root}; frames {self.frame_size}px"
        if self.train_set is not None and self.val_set is not None:
            text += (f"; train {len(self.train_set.clips)} clips / {len(self.train_set.identities)} identities, "
                     f"{len(self.train_set)} pairs per epoch (id_sampling={self.id_sampling}, "
                     f"repeats={self.num_repeats}); val {len(self.val_set)} videos x "
                     f"{'all' if self.val_max_frames is None else f'<= {self.val_max_frames}'} frames; "
                     f"landmarks={self.train_set.with_landmarks}, pose={self.train_set.with_pose}")
        return (text + f"; batch {self.batch_size} ({self.batch_size_per_device}/device), workers {self.num_workers}, "
                f"augment={self.augment}" + (f", {self.num_sources} sources per pair" if self.num_sources > 1 else ""))
