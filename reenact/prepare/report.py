"""What a preprocessing run did: clips written, clips skipped as already done, clips taken as they are,
failures, face-less videos."""

from __future__ import annotations

from dataclasses import dataclass, field

from reenact.errors import ReenactError

AS_IS_LISTED = 20  # a --cropped run over a whole dataset would otherwise print every clip


class PrepareUsageError(ReenactError, ValueError):
    """Bad command-line input (missing metadata file, unreadable CSV row, empty input folder): one line."""


@dataclass(frozen=True)
class Failure:
    """One item (a raw video, a clip) that could not be processed, and why (one line)."""

    item: str
    reason: str

    def line(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass
class PrepareReport:
    """Outcome of ``python -m reenact.prepare``; also the per-task result merged by the runner."""

    written: list[str] = field(default_factory=list)  # clip paths written in this run
    skipped: list[str] = field(default_factory=list)  # clip paths found complete and left untouched
    failed: list[Failure] = field(default_factory=list)
    no_clips: list[Failure] = field(default_factory=list)  # folder mode: videos without a usable face tube
    # folder mode: clips (written or skipped) whose video was already a face crop, so the frame's largest square
    # was kept as it is (the face filled the frame, or --cropped)
    as_is: list[str] = field(default_factory=list)
    detected_frames: int = 0  # frames a face detector ran on (folder mode)
    detection_seconds: float = 0.0
    seconds: float = 0.0

    def merge(self, other: PrepareReport) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.failed += other.failed
        self.no_clips += other.no_clips
        self.as_is += other.as_is
        self.detected_frames += other.detected_frames
        self.detection_seconds += other.detection_seconds

    @property
    def detection_fps(self) -> float:
        return self.detected_frames / self.detection_seconds if self.detection_seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"written {len(self.written)} clips, skipped {len(self.skipped)} already complete, "
            f"failed {len(self.failed)} in {self.seconds:.1f} s"
        ]
        if self.detected_frames:
            lines.append(
                f"face detection: {self.detected_frames} frames in {self.detection_seconds:.1f} s "
                f"({self.detection_fps:.1f} frames/s)"
            )
        if self.as_is:
            lines.append(f"taken as they are (already face crops: the largest square of the frame, resized): "
                         f"{len(self.as_is)} clips")
            lines += [f"as is: {clip}" for clip in self.as_is[:AS_IS_LISTED]]
            if len(self.as_is) > AS_IS_LISTED:
                lines.append(f"as is: ... and {len(self.as_is) - AS_IS_LISTED} more")
        lines += [f"no clip: {f.line()}" for f in self.no_clips]
        lines += [f"failed: {f.line()}" for f in self.failed]
        return "\n".join(lines)
