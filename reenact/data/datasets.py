"""Training pairs and whole test videos from a folder of clips (``.mp4`` files or frame folders).

Clip names follow FOMM's ``{identity}#...`` convention; with id sampling an epoch visits every identity
`num_repeats` times and picks one of its clips at random. Optional side files next to a clip,
``{stem}.landmarks.npy`` (T, L, 2) pixel coordinates and ``{stem}.pose.npy`` (T, 3) yaw/pitch/roll degrees,
are returned with the frames; landmarks are converted to normalised [-1, 1] coordinates
(align_corners=True convention: x_norm = 2 * x_px / (W - 1) - 1) of the resized frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from reenact.data.augmentation import Augmentation
from reenact.data.sampling import item_random
from reenact.data.video import VIDEO_SUFFIXES, VideoError, probe_video, read_frames, read_video
from reenact.errors import ReenactError

log = logging.getLogger(__name__)
MAX_DRAW_ATTEMPTS = 16


class DatasetError(ReenactError):
    """A dataset folder that cannot be used; the message names the folder."""


@dataclass(frozen=True)
class Clip:
    path: Path
    identity: str
    num_frames: int
    width: int
    height: int
    landmarks: Path | None
    pose: Path | None


def clip_stem(path: str | Path) -> str:
    """`id#abc.mp4` -> `id#abc` (also for frame folders named like a clip)."""
    path = Path(path)
    return path.stem if path.suffix.lower() in VIDEO_SUFFIXES else path.name


def identity_of(path: str | Path) -> str:
    stem = clip_stem(path)
    return stem.split("#", 1)[0]


def side_file(clip: str | Path, kind: str) -> Path:
    """Where the `kind` ("landmarks" or "pose") array of a clip lives: `{stem}.{kind}.npy` beside it."""
    clip = Path(clip)
    return clip.parent / f"{clip_stem(clip)}.{kind}.npy"


def _side(clip: Path, kind: str, num_frames: int, trailing: tuple[int | None, ...]) -> tuple[Path | None, bool]:
    """(path, ok): path when the side file exists and matches the clip; ok False when it exists but does not."""
    path = side_file(clip, kind)
    if not path.is_file():
        return None, True
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None, False
    shape_ok = array.ndim == 1 + len(trailing) and all(
        t is None or t == n for t, n in zip(trailing, array.shape[1:], strict=True))
    if array.shape[0] != num_frames or not shape_ok:
        return None, False
    return path, True


def scan_clips(root: str | Path, identities: Sequence[str] | None = None, min_frames: int = 1) -> list[Clip]:
    """Probe every clip in `root` (sorted by name); unusable ones are skipped and counted in one warning line."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    wanted = set(identities) if identities is not None else None
    candidates = sorted(
        p for p in root.iterdir()
        if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
        and (wanted is None or identity_of(p) in wanted)
    )
    clips: list[Clip] = []
    unreadable, short, bad_side = [], [], []
    for path in candidates:
        try:
            info = probe_video(path)
        except VideoError as exc:
            unreadable.append(str(exc))
            continue
        if info.num_frames < min_frames:
            short.append(path.name)
            continue
        landmarks, ok_landmarks = _side(path, "landmarks", info.num_frames, (None, 2))
        pose, ok_pose = _side(path, "pose", info.num_frames, (3,))
        if not (ok_landmarks and ok_pose):
            bad_side.append(path.name)
        clips.append(Clip(path, identity_of(path), info.num_frames, info.width, info.height, landmarks, pose))
    if unreadable or short or bad_side:
        first = (unreadable or [f"{name}: fewer than {min_frames} frames" for name in short] or [""])[0]
        log.warning(
            "%s: skipped %d of %d clips (%d unreadable, %d shorter than %d frames); ignored %d mismatched side "
            "files; first problem: %s", root, len(unreadable) + len(short), len(candidates), len(unreadable),
            len(short), min_frames, len(bad_side), first or "-")
    if not clips:
        raise DatasetError(
            f"no usable video clips in {root} ({len(candidates)} candidates, {len(unreadable)} unreadable, "
            f"{len(short)} too short)")
    return clips


def _common_side_files(clips: list[Clip], root: Path) -> tuple[bool, bool]:
    """Return landmarks/pose only when every clip has them, so every batch has the same keys."""
    result = []
    for kind in ("landmarks", "pose"):
        present = sum(getattr(c, kind) is not None for c in clips)
        if 0 < present < len(clips):
            log.warning("%s: only %d of %d clips have %s files; %s are not returned", root, present, len(clips),
                        kind, kind)
        result.append(present == len(clips))
    return result[0], result[1]


def to_tensor_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float32 in [0, 1], anti-aliased when shrinking."""
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp_(0.0, 1.0)
    return images


def normalise_landmarks(points: np.ndarray, width: int, height: int, size: int) -> torch.Tensor:
    """Pixel coordinates at (width, height) -> normalised coordinates of the frame resized to size x size."""
    points = np.asarray(points, dtype=np.float32)
    scale = np.array([size / width, size / height], dtype=np.float32)
    resized = (points + 0.5) * scale - 0.5  # pixel-centre mapping of an align_corners=False resize
    return torch.from_numpy(2.0 * resized / (size - 1) - 1.0)


# The frames one training sample may hold (its pair and extra sources, float32): 256 MiB is 340 frames at 256px.
MAX_SAMPLE_BYTES = 2**28


class PairDataset(Dataset):
    """Two random frames (sorted in time: source first) of one clip per item, FOMM style.

    With ``num_sources`` S > 1 an item also holds ``sources`` (S, 3, H, W): the source frame first, then S - 1 more
    random frames of the same clip (drawn after the pair, so the pair is the one S = 1 draws), for families that
    render from several source images. Landmarks and pose are returned for the first source only.
    """

    def __init__(
        self,
        root: str | Path,
        frame_size: int,
        id_sampling: bool = True,
        num_repeats: int = 1,
        augmentation: Augmentation | None = None,
        identities: Sequence[str] | None = None,
        seed: int = 0,
        cache_mb: float = 0.0,
        num_sources: int = 1,
    ) -> None:
        if frame_size < 2 or num_repeats < 1:
            raise ValueError(f"frame_size must be >= 2 and num_repeats >= 1, got {frame_size}, {num_repeats}")
        if isinstance(num_sources, bool) or not isinstance(num_sources, int) or num_sources < 1:
            raise ValueError(f"num_sources must be a positive int, got {num_sources!r}")
        self.num_sources = num_sources
        self.root = Path(root)
        self.frame_size = frame_size
        self.id_sampling = id_sampling
        self.num_repeats = num_repeats
        self.augmentation = augmentation
        self.clips = scan_clips(self.root, identities, min_frames=2)
        self._check_num_sources()
        self.with_landmarks, self.with_pose = _common_side_files(self.clips, self.root)
        self.identities = sorted({c.identity for c in self.clips})
        self.by_identity = {i: [c for c in self.clips if c.identity == i] for i in self.identities}
        self.decode_failures = 0  # per process: each DataLoader worker counts its own
        self._broken: set[Path] = set()
        self.seed = seed
        # Decoded clips kept in memory (per worker process) up to cache_mb: a small dataset (the synthetic one)
        # is then decoded once per worker instead of once per sample. Clips beyond the budget are read as usual.
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: dict[Path, np.ndarray | None] = {}
        self._cached_bytes = 0

    def _check_num_sources(self) -> None:
        """Refuse, at start-up, more source frames per pair than the clips can give or one sample can hold.

        The sources are frames of the pair's clip: asking for more than the shortest clip has repeats frames (and
        a huge ``num_sources`` once made every sample, and the network's attention over the sources, grow until
        the kernel killed the run). The bound also caps what one decoded sample allocates.
        """
        if self.num_sources == 1 or not self.clips:
            return
        shortest = min(self.clips, key=lambda clip: clip.num_frames)
        if self.num_sources > shortest.num_frames:
            raise DatasetError(
                f"data.num_sources={self.num_sources}: more source frames per pair than the shortest training clip "
                f"has ({shortest.num_frames} frames, {shortest.path.name}); use at most {shortest.num_frames}")
        sample_bytes = (self.num_sources + 1) * 3 * self.frame_size**2 * 4  # float32 (S + 1, 3, H, W)
        if sample_bytes > MAX_SAMPLE_BYTES:
            most = MAX_SAMPLE_BYTES // (3 * self.frame_size**2 * 4) - 1
            raise DatasetError(
                f"data.num_sources={self.num_sources}: one sample would hold {sample_bytes / 2**20:.0f} MiB of frames "
                f"at {self.frame_size}px (the limit is {MAX_SAMPLE_BYTES // 2**20} MiB); use at most {most}")

    def __len__(self) -> int:
        return (len(self.identities) if self.id_sampling else len(self.clips)) * self.num_repeats

    def _choose(self, index: int, attempt: int, rng: np.random.Generator) -> Clip:
        if attempt == 0:
            if self.id_sampling:
                pool = self.by_identity[self.identities[index % len(self.identities)]]
            else:
                pool = [self.clips[index % len(self.clips)]]
            pool = [c for c in pool if c.path not in self._broken] or pool
        else:
            pool = [c for c in self.clips if c.path not in self._broken]
            if not pool:
                raise DatasetError(f"every clip in {self.root} failed to decode")
        return pool[int(rng.integers(len(pool)))]

    def _read(self, clip: Clip, frames: list[int]) -> np.ndarray:
        """(N, H, W, 3) uint8 frames of ``clip``, from the in-memory cache when the clip fits in it."""
        if clip.path not in self._cache and (
            self._cached_bytes + clip.num_frames * clip.height * clip.width * 3 <= self.cache_bytes
        ):
            decoded = read_video(clip.path)
            # a clip whose decoded length disagrees with its header is never cached: random access handles it
            self._cache[clip.path] = decoded if len(decoded) == clip.num_frames else None
            self._cached_bytes += decoded.nbytes if len(decoded) == clip.num_frames else 0
        cached = self._cache.get(clip.path)
        return cached[frames] if cached is not None else read_frames(clip.path, frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # ``index`` may be a sample key from EpochSampler (epoch * len + i): the item is key % len and every
        # random draw depends only on (seed, key), so results do not depend on worker layout or resumption.
        rng, generator = item_random(self.seed, index)
        for attempt in range(MAX_DRAW_ATTEMPTS):
            clip = self._choose(index, attempt, rng)
            frames = np.sort(rng.integers(0, clip.num_frames, size=2))  # with replacement, as FOMM
            # more source frames, drawn after the pair (nothing is drawn for S = 1: the same pairs as before)
            extra = rng.integers(0, clip.num_frames, size=self.num_sources - 1).tolist() if self.num_sources > 1 else []
            try:
                images = to_tensor_frames(self._read(clip, [*frames.tolist(), *extra]), self.frame_size)
            except (VideoError, IndexError) as exc:
                self.decode_failures += 1
                self._broken.add(clip.path)
                log.warning("skipping clip that failed to decode (%d so far in this process): %s",
                            self.decode_failures, exc)
                continue
            sample = {"source": images[0], "driving": images[1]}
            if self.num_sources > 1:
                sample["sources"] = torch.cat([images[:1], images[2:]])  # (S, 3, H, W), the source first
            if self.with_landmarks:
                points = np.load(clip.landmarks, mmap_mode="r")[frames]
                points = normalise_landmarks(points, clip.width, clip.height, self.frame_size)
                sample["source_landmarks"], sample["driving_landmarks"] = points[0], points[1]
            if self.with_pose:
                pose = torch.from_numpy(np.asarray(np.load(clip.pose, mmap_mode="r")[frames], dtype=np.float32))
                sample["source_pose"], sample["driving_pose"] = pose[0], pose[1]
            if self.augmentation is not None:
                sample = self.augmentation(sample, generator)
            return sample
        raise DatasetError(f"{MAX_DRAW_ATTEMPTS} clips in a row failed to decode in {self.root}")


class VideoDataset(Dataset):
    """Whole videos, sorted by name, for reconstruction validation and evaluation."""

    def __init__(
        self,
        root: str | Path,
        frame_size: int,
        max_frames: int | None = None,
        max_videos: int | None = None,
        identities: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.frame_size = frame_size
        self.max_frames = max_frames
        clips = scan_clips(self.root, identities, min_frames=1)
        self.clips = clips[:max_videos] if max_videos is not None else clips
        self.with_landmarks, self.with_pose = _common_side_files(self.clips, self.root)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        clip = self.clips[index]
        video = to_tensor_frames(read_video(clip.path, self.max_frames), self.frame_size)  # (T, 3, S, S)
        count = video.shape[0]
        item: dict[str, torch.Tensor | str] = {"video": video, "name": clip_stem(clip.path)}
        if self.with_landmarks:
            points = np.load(clip.landmarks, mmap_mode="r")[:count]
            item["landmarks"] = normalise_landmarks(points, clip.width, clip.height, self.frame_size)
        if self.with_pose:
            item["pose"] = torch.from_numpy(np.array(np.load(clip.pose, mmap_mode="r")[:count], dtype=np.float32))
        return item
