"""Reading the published clip lists (VoxCeleb metadata, TalkingHead-1KH tubes) and finding raw videos.

- VoxCeleb (FOMM video-preprocessing ``vox-metadata.csv``): header
  ``video_id,start,end,bbox,fps,width,height,partition,person_id``; ``bbox`` is ``"x0-y0-x1-y1"`` in the
  reference resolution ``width x height``; ``start``/``end`` are frame numbers at the reference ``fps``
  (the clip is ``[start, end)``).
- TalkingHead-1KH tubes: ``video_name,H,W,S,E,L,T,R,B`` per line (no header), the box ``L,T,R,B`` in the
  reference resolution ``W x H``, frames ``S..E`` *inclusive* (their videos_crop.py trims to ``E + 1``) of the
  1-minute chunk ``video_name`` at its own frame rate. Clips keep the listed numbers in their names.

Raw videos are found as ``RAW_DIR/{id}.mp4`` (also .mkv, .webm, .mov, .m4v, .avi) or as the first video
file (by name) inside a folder ``RAW_DIR/{id}/``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from reenact.data.video import VideoInfo
from reenact.errors import ReenactError
from reenact.face.crop import rescale_box
from reenact.prepare.clips import ClipSpec, clip_name
from reenact.prepare.report import PrepareUsageError

RAW_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi")
VOX_COLUMNS = ("video_id", "start", "end", "bbox", "fps", "width", "height", "partition", "person_id")
_PARTITIONS = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}


class ClipError(ReenactError, ValueError):
    """A listed clip that does not fit its raw video (frames beyond the end, an empty box)."""


@dataclass(frozen=True)
class ClipRow:
    """A listed clip in its reference coordinates, before the raw video is looked at."""

    name: str
    split: str
    video_id: str
    start: int
    end: int  # exclusive
    box: tuple[float, float, float, float]
    ref_size: tuple[int, int]  # (width, height) the box refers to
    ref_fps: float | None  # None: frame numbers are the raw video's own


def _fail(path: Path, line: int, message: str) -> PrepareUsageError:
    return PrepareUsageError(f"{path}:{line}: {message}")


def read_vox_metadata(path: str | Path) -> list[ClipRow]:
    path = Path(path)
    if not path.is_file():
        raise PrepareUsageError(f"metadata file not found: {path}")
    rows: list[ClipRow] = []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise PrepareUsageError(f"metadata file is empty: {path}")
        header = [h.strip() for h in header]
        missing = [c for c in VOX_COLUMNS if c not in header]
        if missing:
            raise _fail(path, 1, f"missing column(s) {', '.join(missing)}; expected {','.join(VOX_COLUMNS)}")
        col = {c: header.index(c) for c in VOX_COLUMNS}
        for line, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            try:
                get = {c: values[i].strip() for c, i in col.items()}
                box = tuple(float(v) for v in get["bbox"].split("-"))
                if len(box) != 4:
                    raise ValueError(f"bbox {get['bbox']!r} is not 'x0-y0-x1-y1'")
                start, end = int(get["start"]), int(get["end"])
                split = _PARTITIONS.get(get["partition"].lower())
                if split is None:
                    raise ValueError(f"partition {get['partition']!r} is not train/test")
                ref = (int(get["width"]), int(get["height"]))
                fps = float(get["fps"])
            except (ValueError, IndexError) as exc:
                raise _fail(path, line, f"bad row ({exc})") from None
            if end <= start:
                raise _fail(path, line, f"end {end} is not after start {start}")
            name = clip_name(get["person_id"], get["video_id"], start, end)
            rows.append(ClipRow(name, split, get["video_id"], start, end, box, ref, fps))  # type: ignore[arg-type]
    return rows


def person_of_chunk(video_name: str) -> str:
    """TalkingHead-1KH chunk ``<11-char YouTube id>_0003`` -> the YouTube id (same person across chunks)."""
    match = re.fullmatch(r"(.{11})_\d+", video_name)
    return match.group(1) if match else video_name


def read_talkinghead_tubes(path: str | Path, split: str = "auto") -> list[ClipRow]:
    path = Path(path)
    if not path.is_file():
        raise PrepareUsageError(f"tubes file not found: {path}")
    if split == "auto":
        split = "test" if re.search(r"val|test", path.name, re.IGNORECASE) else "train"
    rows: list[ClipRow] = []
    with open(path, newline="") as handle:
        for line, values in enumerate(csv.reader(handle), start=1):
            values = [v.strip() for v in values]
            if not values or not any(values):
                continue
            if line == 1 and len(values) > 1 and not re.fullmatch(r"-?\d+(\.\d*)?", values[1]):
                continue  # a header row
            try:
                if len(values) != 9:
                    raise ValueError(f"{len(values)} fields, expected video_name,H,W,S,E,L,T,R,B")
                name_field = values[0]
                h, w, s, e = (int(float(v)) for v in values[1:5])
                box = tuple(float(v) for v in values[5:9])
            except ValueError as exc:
                raise _fail(path, line, f"bad row ({exc})") from None
            if e < s:
                raise _fail(path, line, f"end frame {e} is before start frame {s}")
            name = clip_name(person_of_chunk(name_field), name_field, s, e)
            rows.append(ClipRow(name, split, name_field, s, e + 1, box, (w, h), None))  # type: ignore[arg-type]
    return rows


def find_raw_video(raw_dir: str | Path, video_id: str) -> Path | None:
    raw_dir = Path(raw_dir)
    for suffix in RAW_SUFFIXES:
        candidate = raw_dir / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    folder = raw_dir / video_id
    if folder.is_dir():
        inside = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RAW_SUFFIXES)
        if inside:
            return inside[0]
    return None


def resolve_clip(row: ClipRow, info: VideoInfo) -> ClipSpec:
    """Map a listed clip onto the real video: rescale the box, convert frame numbers to the raw rate."""
    x0, y0, x1, y1 = rescale_box(row.box, row.ref_size, (info.width, info.height))
    box = (round(x0), round(y0), round(x1), round(y1))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ClipError(f"empty crop box {box} after rescaling to {info.width}x{info.height}")
    if row.ref_fps is None:
        indices = tuple(range(row.start, row.end))
        fps = info.fps
    else:
        ratio = info.fps / row.ref_fps
        # Output frame i shows the raw frame on screen at time i / ref_fps.
        indices = tuple(math.floor(i * ratio + 1e-6) for i in range(row.start, row.end))
        fps = row.ref_fps
    if indices[-1] >= info.num_frames:
        raise ClipError(f"needs frame {indices[-1]} but the video has {info.num_frames} frames")
    return ClipSpec(row.name, row.split, indices, box, fps)


def split_of_video(video_id: str, test_fraction: float) -> str:
    """Deterministic per-video split (stable across runs and worker orders): a hash of the id."""
    if test_fraction <= 0:
        return "train"
    digest = int(hashlib.sha1(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if digest < test_fraction else "train"
