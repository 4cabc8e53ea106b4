"""Animation entry point: ``python -m reenact.animate ckpt_path=CKPT source=PATH driving=VIDEO output=OUT.mp4``.

    python -m reenact.animate ckpt_path=logs/train/runs/<run> source=me.jpg driving=talk.mp4 output=me.mp4
    python -m reenact.animate ckpt_path=<run> source=faces/ driving=talk.mp4 output=videos/ paste_back=true
    python -m reenact.animate ckpt_path=<run> source=me.jpg driving=talk.mp4 reference_frame=best side_by_side=true
    python -m reenact.animate ckpt_path=<run> source=[front.jpg,smile.jpg] driving=talk.mp4 output=me.mp4  # several
    python -m reenact.animate backend=onnxruntime export_dir=exported/ source=me.jpg driving=talk.mp4 output=me.mp4

Options and defaults: ``reenact/conf/animate.yaml``. Bad input (no face in the source, an unreadable video, a
checkpoint of another model family, a missing file) is reported as one line with exit code 2. ``run(cfg)``
holds the logic so tests call it without Hydra's ``main``; it is a thin layer over
:func:`reenact.load_pretrained` and :func:`reenact.animation.video_job.animate_files`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from reenact.animation.errors import AnimationInputError
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE, with_override_check
from reenact.utils.messages import one_line

log = logging.getLogger("reenact.animate")
REQUIRED = ("ckpt_path", "source", "driving")
BACKENDS = ("pytorch", "onnxruntime")


def options_from_config(cfg: DictConfig) -> Any:
    """The :class:`AnimationOptions` a config describes; unknown crop keys fail in one line."""
    from reenact.animation.cropping import CropSettings
    from reenact.animation.pipeline import PRECISIONS, REFERENCE_CHOICES
    from reenact.animation.video_job import AnimationOptions

    crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") is not None else {}
    assert isinstance(crop, dict)
    known = set(CropSettings.__dataclass_fields__)
    unknown = sorted(set(crop) - known)
    if unknown:
        raise AnimationInputError(f"crop.{unknown[0]}: unknown option; known: {', '.join(sorted(known))}")
    reference = cfg.get("reference_frame", "first")
    if reference not in REFERENCE_CHOICES and not (isinstance(reference, int) and not isinstance(reference, bool)):
        raise AnimationInputError(f"reference_frame={reference!r}; choose first, best or a frame index")
    if cfg.get("precision", "fp32") not in PRECISIONS:
        raise AnimationInputError(f"precision={cfg.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if cfg.get("max_frames") is not None and int(cfg.max_frames) < 1:
        raise AnimationInputError(f"max_frames={cfg.max_frames}; give a positive number of frames or null")
    return AnimationOptions(
        relative=bool(cfg.relative),
        adapt_movement_scale=bool(cfg.adapt_movement_scale),
        reference_frame=reference,
        best_frame_by=str(cfg.get("best_frame_by", "keypoints")),
        batch_size=int(cfg.batch_size),
        precision=str(cfg.precision),
        max_frames=None if cfg.get("max_frames") is None else int(cfg.max_frames),
        paste_back=bool(cfg.paste_back),
        side_by_side=bool(cfg.side_by_side),
        progress=bool(cfg.get("progress", True)),
        crf=int(cfg.get("crf", 18)),
        crop=CropSettings(**crop),
    )


def run(cfg: DictConfig) -> list[Any]:
    """Animate ``cfg.source`` (an image or a folder) with ``cfg.driving``; returns one result per source."""
    backend = cfg.get("backend", "pytorch")
    if backend not in BACKENDS:
        raise AnimationInputError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    model_key = "ckpt_path" if backend == "pytorch" else "export_dir"
    for key in (model_key, *REQUIRED[1:]):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise AnimationInputError(f"{key} is required: python -m reenact.animate {model_key}="
                                      f"{'CKPT' if backend == 'pytorch' else 'DIR backend=onnxruntime'} "
                                      f"source=IMAGE driving=VIDEO output=OUT.mp4")
    family = cfg.get("model_family")
    if family is not None:
        from reenact.families.base import UnknownFamilyError, get_family

        try:
            get_family(str(family))
        except UnknownFamilyError as exc:
            raise AnimationInputError(f"model_family={family!r}: {exc}") from None
    options = options_from_config(cfg)

    from reenact.animation.video_job import animate_files
    from reenact.api import load_pretrained

    if backend == "onnxruntime":  # the graphs of python -m reenact.export, on the CPU
        from reenact.export.onnx_backend import load_exported

        model = load_exported(cfg.export_dir, expected_family=family)
    else:
        model = load_pretrained(cfg.ckpt_path, device=cfg.get("device", "auto"), expected_family=family)
        if cfg.get("channels_last", False):
            from reenact.utils.memory_format import to_channels_last

            to_channels_last(model.network)
        if cfg.get("nnpack", False):
            from reenact.utils.nnpack import use_nnpack

            use_nnpack(model.network)
    log.info("loaded a %s model at %dx%d on %s", model.family, model.frame_size, model.frame_size, model.device)
    default_dir = Path(cfg.paths.output_dir) if cfg.get("output") is None else Path(".")
    results = animate_files(model, cfg.source, cfg.driving, cfg.get("output"), options, default_dir)
    for result in results:
        if result.skipped:
            print(f"skipped {result.source}: {result.skipped}")
        else:
            extra = f" and {result.side_by_side}" if result.side_by_side else ""
            print(f"wrote {result.output}{extra} ({result.num_frames} frames at {result.fps:g} fps)")
    return results


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="animate")
def main(cfg: DictConfig) -> None:
    from reenact.errors import USER_ERRORS

    try:
        run(cfg)
    except (AnimationInputError, *USER_ERRORS) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
