"""The web app: ``python -m reenact.app [ckpt_path=CKPT|RUNS_DIR] [server_port=PORT]`` (``pip install reenact[app]``).

    python -m reenact.app ckpt_path=logs/train/runs            # every run under the folder, on http://127.0.0.1:7860
    python -m reenact.app ckpt_path=last.ckpt server_port=8000

A Gradio page on 127.0.0.1 (``server_name=0.0.0.0`` serves the local network; ``share=true`` makes a public link,
never by default): pick a checkpoint, upload a portrait (and, for a family that renders from several, more images of
the same person) and a driving video, choose the options of ``python -m reenact.animate`` (transfer mode, face crop
with a preview of the crop, paste-back, steady motion, reference frame, a part of the video), watch the progress, then
watch and download the result and the side-by-side video.

The page adds no second code path: :func:`animate_config` turns the page's values into the ``animate`` config (the
same keys as the command line) and :func:`animate_page` runs the command line's own
:func:`reenact.animate.options_from_config` and :func:`reenact.animation.video_job.animate_files` on it. Bad input (no
face, a text file as video, an unreadable image, a broken checkpoint) is shown on the page as one line, and the server
keeps serving.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from reenact.animation.errors import AnimationInputError
from reenact.cli import user_errors, with_override_check
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE
from reenact.utils.messages import one_line

log = logging.getLogger("reenact.app")
REFERENCE_CHOICES = ["first", "best"]
CHECKPOINT_NAMES = ("last.ckpt",)


def require_gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise AnimationInputError("the web app needs Gradio: pip install 'reenact[app]'") from None
    return gradio


def list_checkpoints(path: str | Path | None) -> list[str]:
    """A checkpoint file as it is; a folder: the last checkpoint of every training run under it (newest first), or its
    .ckpt files when it holds no runs."""
    if path is None or str(path) == "":
        return []
    path = Path(str(path)).expanduser()
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise AnimationInputError(f"ckpt_path={path}: no such checkpoint file or folder")
    found = [p for name in CHECKPOINT_NAMES for p in path.rglob(f"checkpoints/{name}")]
    if not found:
        found = list(path.rglob("*.ckpt"))
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


class ModelCache:
    """The loaded checkpoint (one at a time: loading is seconds, animating many clips with one model is the rule)."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._lock = threading.Lock()
        self._key: tuple[str, bool] | None = None
        self._model: Any = None

    def get(self, ckpt_path: str, channels_last: bool = False) -> Any:
        """The model of ``ckpt_path``, its network stored channels-last when asked (as ``animate`` does it)."""
        from reenact.api import load_pretrained

        with self._lock:
            if self._key != (ckpt_path, channels_last):
                self._model, self._key = None, None
                model = load_pretrained(ckpt_path, device=self.device)
                if channels_last:
                    from reenact.utils.memory_format import to_channels_last

                    to_channels_last(model.network)
                self._model, self._key = model, (ckpt_path, channels_last)
            return self._model


def _optional_number(value: Any) -> float | None:
    """A number field: empty, or 0 (what the page sends for an empty one), is "not set"."""
    if value is None or value == "" or float(value) == 0:
        return None
    return float(value)


@functools.lru_cache(maxsize=1)
def _composed_animate_defaults() -> DictConfig:
    from reenact.utils.hydra_utils import compose_config

    return compose_config("animate", ["paths.output_dir=.", "paths.root_dir=."])


def animate_defaults() -> DictConfig:
    """A copy of ``reenact/conf/animate.yaml``'s defaults (composed once: page requests never touch Hydra's state)."""
    return copy.deepcopy(_composed_animate_defaults())


def animate_config(ckpt_path: str, portraits: list[str], driving: str, output: Path, *, transfer: str | None = None,
                   crop: bool = True, paste_back: bool = False, smooth: float = 0.0, reference_frame: Any = "first",
                   max_frames: Any = None, start: Any = None, end: Any = None, side_by_side: bool = True,
                   device: str = "auto") -> DictConfig:
    """The page's values as the ``animate`` config of the command line (``reenact/conf/animate.yaml``)."""
    from omegaconf import open_dict

    if not ckpt_path:
        raise AnimationInputError("pick a checkpoint")
    if not portraits:
        raise AnimationInputError("upload a portrait")
    if not driving:
        raise AnimationInputError("upload a driving video")
    reference: Any = str(reference_frame or "first").strip()
    if reference.lstrip("-").isdigit():
        reference = int(reference)
    elif reference not in REFERENCE_CHOICES:
        raise AnimationInputError(f"reference frame {reference!r}: choose first, best or a frame number")
    maximum = _optional_number(max_frames)
    cfg = animate_defaults()
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.root_dir = str(output.parent)
        cfg.ckpt_path = str(ckpt_path)
        cfg.source = str(portraits[0]) if len(portraits) == 1 else [str(p) for p in portraits]
        cfg.driving = str(driving)
        cfg.output = str(output)
        cfg.device = device
        cfg.transfer = transfer or None  # checked against the family's modes by the animation, in one line
        cfg.paste_back = bool(paste_back)
        cfg.side_by_side = bool(side_by_side)
        cfg.smooth = float(smooth or 0.0)
        cfg.reference_frame = reference
        cfg.max_frames = None if maximum is None else int(maximum)
        cfg.start = _optional_number(start)
        cfg.end = _optional_number(end)
        cfg.crop.source = bool(crop)
        cfg.crop.driving = bool(crop)
        cfg.progress = True  # tqdm bars, which the page follows
    return cfg


def animate_page(models: ModelCache, cfg: DictConfig) -> Any:
    """Run the command line's animation on a page's config; the one :class:`AnimationResult`."""
    from reenact.animation.video_job import animate_files
    from reenact.cli.animate import options_from_config, resolve_speed

    cfg = resolve_speed(cfg)  # precision=auto and channels_last=auto, as the command line resolves them
    options = options_from_config(cfg)
    model = models.get(str(cfg.ckpt_path), channels_last=bool(cfg.get("channels_last", False)))
    results = animate_files(model, cfg.source, cfg.driving, cfg.output, options)
    return results[0]


def crop_preview(portrait: str | None, crop: bool) -> tuple[Any, str]:
    """The portrait with the square the animation will use drawn on it, and a line saying what was found."""
    import cv2

    from reenact.animation.cropping import CropSettings, build_detector, read_image, source_crop_box

    if not portrait:
        return None, ""
    settings = CropSettings(source=bool(crop))
    try:
        image = read_image(portrait, settings.source_max_dim)
        box, face = source_crop_box(image, portrait, settings, build_detector(settings) if crop else None)
    except Exception as exc:  # shown on the page; the server goes on
        return None, f"**error:** {one_line(exc)}"
    preview = image.copy()
    thickness = max(2, image.shape[0] // 200)
    cv2.rectangle(preview, box[:2], box[2:], (255, 64, 64), thickness)
    what = "face found" if face is not None else "no cropping: the centred square"
    return preview, f"crop {box[2] - box[0]}x{box[3] - box[1]} px ({what})"


def model_summary(models: ModelCache, ckpt_path: str | None) -> str:
    if not ckpt_path:
        return "no checkpoint: give ckpt_path= on the command line or type a path"
    try:
        model = models.get(str(ckpt_path))
    except Exception as exc:
        return f"**error:** {one_line(exc)}"
    most = model.network.max_sources
    several = "any number of" if most is None else str(most)
    return (f"**{model.family}** at {model.frame_size}x{model.frame_size} on {model.device}; renders from "
            f"{several} portrait{'s' if most != 1 else ''} of one person; transfer modes "
            f"{', '.join(model.network.transfer_modes)}")


def transfer_modes(models: ModelCache, ckpt_path: str | None) -> tuple[list[str], str | None]:
    """The checkpoint family's transfer modes and its default (relative and absolute before one is loaded)."""
    try:
        modes = list(models.get(str(ckpt_path)).network.transfer_modes) if ckpt_path else []
    except Exception:  # the summary shows why
        modes = []
    modes = modes or ["relative", "absolute"]
    return modes, modes[0]


def build_app(ckpt_path: str | None = None, device: str = "auto", output_dir: str | Path | None = None) -> Any:
    """The Gradio Blocks page (not yet launched)."""
    gr = require_gradio()
    animate_defaults()  # composed now, in the main thread
    checkpoints = list_checkpoints(ckpt_path)
    models = ModelCache(device)
    out_root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="reenact-app-"))
    out_root.mkdir(parents=True, exist_ok=True)

    def run(ckpt: str, portrait: str | None, more: list[Any] | None, driving: str | None, transfer: str, crop: bool,
            paste_back: bool, smooth: float, reference: str, max_frames: Any, start: Any, end: Any,
            progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's way of asking for a bar)
            ) -> tuple[Any, Any, list[str] | None, str]:
        try:
            extra = [getattr(f, "name", f) for f in (more or [])]
            portraits = [p for p in [portrait, *extra] if p]
            job = out_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}"
            output = job / "result.mp4"
            cfg = animate_config(ckpt, portraits, driving or "", output, transfer=transfer, crop=crop,
                                 paste_back=paste_back, smooth=smooth, reference_frame=reference,
                                 max_frames=max_frames, start=start, end=end, device=device)
            progress(0, desc="loading the model")
            result = animate_page(models, cfg)
        except Exception as exc:  # one line on the page; the server keeps serving
            log.warning("animation failed: %s", one_line(exc))
            return None, None, None, f"**error:** {one_line(exc)}"
        files = [str(result.output)] + ([str(result.side_by_side)] if result.side_by_side else [])
        return (str(result.output), str(result.side_by_side) if result.side_by_side else None, files,
                f"done: {result.num_frames} frames at {result.fps:g} fps (reference frame {result.reference_index})")

    with gr.Blocks(title="reenact") as page:
        gr.Markdown("# reenact: animate a portrait with a driving video")
        with gr.Row():
            checkpoint = gr.Dropdown(checkpoints, value=checkpoints[0] if checkpoints else None, label="checkpoint",
                                     allow_custom_value=True, scale=3)
            summary = gr.Markdown(model_summary(models, checkpoints[0]) if checkpoints else model_summary(models, None))
        with gr.Row():
            with gr.Column():
                # a file, not an Image component: Gradio would decode the image before the page's own checks (a
                # huge image would fail there with Gradio's message); the crop preview below shows it
                portrait = gr.File(label="portrait", file_types=["image"], type="filepath", elem_id="portrait",
                                   height=120)
                more = gr.File(file_count="multiple", file_types=["image"], label="more portraits of the same person "
                               "(families that render from several)", elem_id="more_portraits")
                preview = gr.Image(label="crop preview", interactive=False, elem_id="crop_preview", height=280)
                preview_note = gr.Markdown()
            with gr.Column():
                driving = gr.Video(label="driving video", elem_id="driving", sources=["upload"], height=280)
                modes, default_mode = transfer_modes(models, checkpoints[0] if checkpoints else None)
                transfer = gr.Radio(modes, value=default_mode, label="transfer mode (the first is the family's "
                                    "default)", elem_id="transfer")
                crop = gr.Checkbox(True, label="crop to the face (portrait and video)")
                paste_back = gr.Checkbox(False, label="paste back into the full portrait")
                smooth = gr.Slider(0, 5, value=0, step=0.5, label="steady motion (0: off; larger: steadier)")
                reference = gr.Dropdown(REFERENCE_CHOICES, value="first", allow_custom_value=True,
                                        label="reference frame (first, best or a frame number)")
                with gr.Row():
                    max_frames = gr.Number(None, label="max frames (0: all)", precision=0, elem_id="max_frames")
                    start = gr.Number(None, label="start (s)")
                    end = gr.Number(None, label="end (s; 0: the end)")
                button = gr.Button("Animate", variant="primary", elem_id="animate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            result = gr.Video(label="result", elem_id="result", interactive=False, height=320)
            side = gr.Video(label="side by side", elem_id="side_by_side", interactive=False, height=320)
        downloads = gr.File(label="download", file_count="multiple", interactive=False, elem_id="downloads")

        def pick(ckpt: str) -> tuple[str, Any]:
            choices, value = transfer_modes(models, ckpt)
            return model_summary(models, ckpt), gr.Radio(choices=choices, value=value)

        checkpoint.change(pick, checkpoint, [summary, transfer], api_name="model_summary")
        for trigger in (portrait.change, crop.change):
            trigger(crop_preview, [portrait, crop], [preview, preview_note], api_name=False)
        button.click(run, [checkpoint, portrait, more, driving, transfer, crop, paste_back, smooth, reference,
                           max_frames, start, end], [result, side, downloads, status], api_name="animate")
    page.reenact_output_dir = out_root
    return page


def launch(cfg: DictConfig, block: bool = True) -> Any:
    """Build and start the page as ``cfg`` says (127.0.0.1 unless ``server_name`` says otherwise)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    page = build_app(cfg.get("ckpt_path"), device=str(cfg.get("device", "auto")), output_dir=cfg.get("output_dir"))
    host, port = str(cfg.get("server_name", "127.0.0.1")), int(cfg.get("server_port", 7860))
    page.queue(default_concurrency_limit=1)  # one animation at a time; the others wait in line
    page.launch(server_name=host, server_port=port, share=bool(cfg.get("share", False)),
                prevent_thread_lock=not block, max_file_size=str(cfg.get("max_file_size", "200mb")),
                allowed_paths=[str(page.reenact_output_dir)], show_error=True, quiet=not block)
    return page


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="app")
def main(cfg: DictConfig) -> None:
    with user_errors():
        launch(cfg)


if __name__ == "__main__":
    main()
