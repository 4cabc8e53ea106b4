"""Live driving: ``python -m reenact.live ckpt_path=CKPT source=portrait.jpg driving=0|VIDEO [output=OUT.mp4]``.

    python -m reenact.live ckpt_path=logs/train/runs/<run> source=me.jpg driving=0 output=live.mp4   # camera 0
    python -m reenact.live ckpt_path=<run> source=me.jpg driving=talk.mp4 output=live.mp4 smooth=true  # a file

The driving source is read at its own pace by a reader thread: a camera as fast as it delivers frames, a video file
at its frame rate (``realtime=true``; ``false`` reads a file as fast as the model animates, dropping nothing). The
animator (:class:`reenact.animation.stream.StreamAnimator`) always takes the newest frame; frames that arrive while it
is busy are dropped. Each animated frame goes to the output file (written at the source's frame rate, an animated
frame repeated over the frames dropped after it, so the file plays in real time), to a window (``window=true``,
where OpenCV has a GUI) and to a virtual camera (``virtual_camera=true``, where ``pyvirtualcam`` and a camera
device exist). At the end it prints frames/s and the latency (from a frame's arrival to its animated frame, p50 and
p95). The source portrait is cropped to its face as ``python -m reenact.animate`` crops it; the driving frames are
cut by one square found on the first frame (``crop.driving=false``: the centred square). Options and defaults:
``reenact/conf/live.yaml``. Bad input is reported as one line with exit code 2.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from reenact.animation.errors import AnimationInputError
from reenact.cli import user_errors, with_override_check
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE

log = logging.getLogger("reenact.live")


@dataclass
class Arrival:
    index: int  # the frame's number in the driving source
    frame: np.ndarray  # (H, W, 3) uint8 RGB
    time: float  # time.perf_counter() when it became available


class FrameReader:
    """Reads a camera (an int) or a video file in a thread, keeping only the newest frame (older ones are dropped)."""

    def __init__(self, driving: Any, realtime: bool = True) -> None:
        self.driving = driving
        self.realtime = realtime
        self.fps = 30.0
        self.count = 0  # frames read so far
        self.error: BaseException | None = None
        self._latest: Arrival | None = None
        self._done = False
        self._stop = threading.Event()
        self._ready = threading.Condition()
        self._frames = self._open()
        self._thread = threading.Thread(target=self._run, daemon=True, name="reenact-live-reader")

    def _open(self) -> Iterator[np.ndarray]:
        if isinstance(self.driving, int) and not isinstance(self.driving, bool):
            import cv2

            capture = cv2.VideoCapture(self.driving)
            if not capture.isOpened():
                raise AnimationInputError(f"camera {self.driving} cannot be opened (no such device?)")
            self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 30.0)
            self.realtime = False  # a camera paces itself

            def camera() -> Iterator[np.ndarray]:
                try:
                    while not self._stop.is_set():
                        ok, frame = capture.read()
                        if not ok:
                            return
                        yield np.ascontiguousarray(frame[..., ::-1])  # BGR -> RGB
                finally:
                    capture.release()

            return camera()
        from reenact.animation.video_job import driving_frames, driving_video_error
        from reenact.data.video import VideoError, probe_video

        path = Path(str(self.driving))
        if not path.exists():
            raise AnimationInputError(f"driving video not found: {path}")
        try:
            self.fps = probe_video(path).fps
        except VideoError as exc:
            raise driving_video_error(path, exc) from None
        return driving_frames(path)

    def start(self) -> FrameReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            for index, frame in enumerate(self._frames):
                if self._stop.is_set():
                    break
                if self.realtime:  # a file plays at its frame rate
                    delay = start + index / self.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                with self._ready:
                    self._latest = Arrival(index, frame, time.perf_counter())
                    self.count = index + 1
                    self._ready.notify_all()
                if not self.realtime:  # as fast as the consumer takes them: wait until this one is taken
                    with self._ready:
                        while self._latest is not None and not self._stop.is_set():
                            self._ready.wait(0.1)
        except BaseException as exc:  # reported by the consumer, in its thread
            self.error = exc
        finally:
            with self._ready:
                self._done = True
                self._ready.notify_all()

    def take(self) -> Arrival | None:
        """The newest frame not taken yet (waiting for one), or None when the source has ended."""
        with self._ready:
            while self._latest is None and not self._done:
                self._ready.wait(0.1)
            arrival, self._latest = self._latest, None
            self._ready.notify_all()
        if arrival is None and self.error is not None:
            raise self.error
        return arrival

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class LiveReport:
    read: int = 0  # frames the source delivered
    animated: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds from arrival to the animated frame

    @property
    def fps(self) -> float:
        return self.animated / self.seconds if self.seconds > 0 else 0.0

    @property
    def dropped(self) -> int:
        return max(self.read - self.animated, 0)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000.0 if self.latencies else float("nan")

    def line(self) -> str:
        return (f"animated {self.animated} of {self.read} frames ({self.dropped} dropped) in {self.seconds:.1f} s: "
                f"{self.fps:.1f} frames/s, latency p50 {self.percentile(50):.0f} ms, p95 {self.percentile(95):.0f} ms")


class Outputs:
    """Where animated frames go: a file (real-time timing), a window, a virtual camera."""

    def __init__(self, cfg: DictConfig, fps: float) -> None:
        self.fps = fps
        self.file = None
        self.window = bool(cfg.get("window", False))
        self.camera = None
        self.written = 0
        if self.window:
            import cv2

            try:
                cv2.namedWindow("reenact live")
            except cv2.error:
                raise AnimationInputError("window=true: this OpenCV has no window support (a headless build); "
                                          "write to output=OUT.mp4 instead") from None
        if cfg.get("virtual_camera", False):
            try:
                import pyvirtualcam  # type: ignore[import-not-found]
            except ImportError:
                raise AnimationInputError("virtual_camera=true needs pyvirtualcam (pip install pyvirtualcam) and a "
                                          "virtual camera device") from None
            self._virtual = pyvirtualcam
        if cfg.get("output"):
            from reenact.animation.outputs import BackgroundWriter

            self.file = BackgroundWriter(_path(cfg.output), fps, {"crf": int(cfg.get("crf", 18))})

    def put(self, frame: np.ndarray, index: int) -> None:
        """The animated frame of driving frame ``index``; in the file it also fills the frames dropped before it."""
        if self.file is not None:
            for _ in range(self.written, index + 1):
                self.file.put(frame)
            self.written = max(self.written, index + 1)
        if self.window:
            import cv2

            cv2.imshow("reenact live", frame[..., ::-1])
            cv2.waitKey(1)
        if getattr(self, "_virtual", None) is not None:
            if self.camera is None:
                self.camera = self._virtual.Camera(width=frame.shape[1], height=frame.shape[0], fps=self.fps)
            self.camera.send(frame)

    def close(self, abort: bool = False) -> None:
        if self.file is not None:
            if self.written == 0:
                abort = True
            self.file.close(abort=abort)
        if self.camera is not None:
            self.camera.close()


def _path(value: Any) -> Path:
    return Path(str(value))


def driving_source(value: Any) -> Any:
    """``driving=0`` (a camera index, also as text) or a path."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    return int(text) if text.isdigit() else text


def load_model(cfg: DictConfig) -> Any:
    """The model ``ckpt_path`` (PyTorch) or ``export_dir`` (``backend=onnxruntime``) names."""
    backend = cfg.get("backend", "pytorch")
    if backend == "onnxruntime":
        from reenact.export.onnx_backend import load_exported

        return load_exported(cfg.export_dir, expected_family=cfg.get("model_family"))
    if backend != "pytorch":
        raise AnimationInputError(f"backend={backend!r}; choose pytorch or onnxruntime")
    from reenact.api import load_pretrained

    return load_pretrained(cfg.ckpt_path, device=cfg.get("device", "auto"), expected_family=cfg.get("model_family"))


def run(cfg: DictConfig) -> LiveReport:
    """Animate ``cfg.source`` live with ``cfg.driving``; returns the frame counts and latencies (also printed)."""
    from reenact.animation.cropping import build_detector, driving_crop_box
    from reenact.animation.video_job import prepare_source
    from reenact.cli.animate import options_from_config
    from reenact.face import crop_and_resize

    model_key = "export_dir" if cfg.get("backend", "pytorch") == "onnxruntime" else "ckpt_path"
    for key in (model_key, "source", "driving"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise AnimationInputError(f"{key} is required: python -m reenact.live {model_key}=... source=IMAGE "
                                      f"driving=0|VIDEO [output=OUT.mp4]")
    options = options_from_config(cfg)
    if cfg.get("threads"):  # a busy CPU: fewer threads than cores keep idle threads from spinning
        import torch

        torch.set_num_threads(int(cfg.threads))
    reader = FrameReader(driving_source(cfg.driving), realtime=bool(cfg.get("realtime", True)))
    model = load_model(cfg)
    detector = build_detector(options.crop) if options.crop.source or options.crop.driving else None
    _, image, box = prepare_source(_path(cfg.source), options, detector)
    size = model.frame_size
    animate = model.stream(crop_and_resize(image, box, size), options, fps=options.fps or reader.fps)
    log.info("live: a %s model at %dx%d on %s, driving %s at %.3g fps", model.family, size, size, model.device,
             cfg.driving, reader.fps)
    outputs = Outputs(cfg, reader.fps)
    report = LiveReport()
    limit = cfg.get("max_seconds")
    crop_box = None
    last_index: int | None = None
    reader.start()
    started = time.perf_counter()
    try:
        while (arrival := reader.take()) is not None:
            if crop_box is None:  # one square for the whole stream, found on the first frame
                crop_box, _ = driving_crop_box([arrival.frame], cfg.driving, options.crop, detector, 1)
            # the filter's time step spans the frames dropped since the last animated one
            step = None if last_index is None else (arrival.index - last_index) / reader.fps
            last_index = arrival.index
            result = animate(crop_and_resize(arrival.frame, crop_box, size), dt=step)
            report.latencies.append(time.perf_counter() - arrival.time)
            report.animated += 1
            outputs.put(result, arrival.index)
            if limit is not None and time.perf_counter() - started >= float(limit):
                break
    except KeyboardInterrupt:  # Ctrl-C ends a live session: what was animated is kept
        pass
    except BaseException:
        reader.stop()
        outputs.close(abort=True)
        raise
    report.seconds = time.perf_counter() - started
    reader.stop()
    report.read = reader.count
    outputs.close()
    print(report.line())
    if cfg.get("output"):
        print(f"wrote {cfg.output} ({outputs.written} frames at {reader.fps:g} fps)")
    return report


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="live")
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


def main() -> None:
    """``python -m reenact.live`` and ``reenact-live``: a family's own transfer options are accepted at the top level
    of the command line (``adapt_movement_scale=true``), as ``python -m reenact.animate`` accepts them."""
    from reenact.cli.animate import family_option_overrides

    sys.argv[1:] = family_option_overrides(sys.argv[1:], "live")
    _hydra_main()


if __name__ == "__main__":
    main()
