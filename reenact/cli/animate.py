"""Animation entry point: ``python -m reenact.animate ckpt_path=CKPT source=PATH driving=VIDEO output=OUT.mp4``.

    python -m reenact.animate ckpt_path=logs/train/runs/<run> source=me.jpg driving=talk.mp4 output=me.mp4
    python -m reenact.animate ckpt_path=<run> source=faces/ driving=talk.mp4 output=videos/ paste_back=true
    python -m reenact.animate ckpt_path=<run> source=me.jpg driving=talk.mp4 reference_frame=best side_by_side=true
    python -m reenact.animate ckpt_path=<run> source=me.jpg driving=talk.mp4 transfer=absolute
    python -m reenact.animate ckpt_path=<run> source=me.jpg driving=talk.mp4 adapt_movement_scale=true  # FOMM option
    python -m reenact.animate ckpt_path=<run> source=[front.jpg,smile.jpg] driving=talk.mp4 output=me.mp4  # several
    python -m reenact.animate backend=onnxruntime export_dir=exported/ source=me.jpg driving=talk.mp4 output=me.mp4

Options and defaults: ``conf/animate.yaml``. Bad input (no face in the source, an unreadable video, a
checkpoint of another model family, a missing file) is reported as one line with exit code 2. ``run(cfg)``
holds the logic so tests call it without Hydra's ``main``; it is a thin layer over
:func:`reenact.load_pretrained` and :func:`reenact.animation.video_job.animate_files`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from reenact.animation.errors import AnimationInputError
from reenact.cli import user_errors, with_override_check
from reenact.families.base import registered_families
from reenact.utils.hydra_utils import CONFIG_DIR, CONFIG_PATH, VERSION_BASE
from reenact.utils.performance import PerformanceSettings

log = logging.getLogger("reenact.animate")
REQUIRED = ("ckpt_path", "source", "driving")
BACKENDS = ("pytorch", "onnxruntime")


def options_from_config(cfg: DictConfig) -> Any:
    """The :class:`AnimationOptions` a config describes; unknown crop keys and bad values fail in one line."""
    cfg = resolve_speed(cfg)  # precision=auto / channels_last=auto for the device
    from reenact.animation.cropping import CropSettings
    from reenact.animation.settings import transfer_from_relative
    from reenact.animation.video_job import AnimationOptions

    crop = OmegaConf.to_container(cfg.crop, resolve=True) if cfg.get("crop") is not None else {}
    assert isinstance(crop, dict)
    known = set(CropSettings.__dataclass_fields__)
    unknown = sorted(set(crop) - known)
    if unknown:
        raise AnimationInputError(f"crop.{unknown[0]}: unknown option; known: {', '.join(sorted(known))}")
    transfer = cfg.get("transfer")
    if transfer is None:
        transfer = transfer_from_relative(cfg.get("relative"))
    options = cfg.get("transfer_options")
    transfer_options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    assert isinstance(transfer_options, dict)
    times = {}
    for name in ("start", "end"):
        value = cfg.get(name)
        try:
            times[name] = None if value is None else float(value)
        except (TypeError, ValueError):
            raise AnimationInputError(f"{name}={value!r}; give a time in seconds or null") from None
    return AnimationOptions(
        transfer=None if transfer is None else str(transfer),
        transfer_options=transfer_options,
        reference_frame=cfg.get("reference_frame", "first"),
        best_frame_by=str(cfg.get("best_frame_by", "keypoints")),
        batch_size=int(cfg.batch_size),
        precision=str(cfg.get("precision", "fp32")),
        max_frames=None if cfg.get("max_frames") is None else int(cfg.max_frames),
        start=times["start"],
        end=times["end"],
        smooth=cfg.get("smooth", False),
        paste_back=bool(cfg.paste_back),
        side_by_side=bool(cfg.side_by_side),
        progress=bool(cfg.get("progress", True)),
        crf=int(cfg.get("crf", 18)),
        crop=CropSettings(**crop),
    )


def resolve_speed(cfg: DictConfig) -> DictConfig:
    """``precision=auto`` and ``channels_last=auto`` as :func:`reenact.utils.speed.recommended` gives them for the
    device the network runs on (the rule ``trainer=cpu`` follows); onnxruntime runs fp32 channels-first."""
    precision, channels_last = cfg.get("precision", "fp32"), cfg.get("channels_last", False)
    if "auto" not in (precision, channels_last):
        return cfg
    from reenact.animation.pipeline import resolve_device
    from reenact.utils.speed import recommended

    if cfg.get("backend", "pytorch") == "pytorch":
        settings = recommended(resolve_device(cfg.get("device", "auto")))
        auto_precision, auto_channels_last = settings.autocast, settings.channels_last
    else:
        auto_precision, auto_channels_last = "fp32", False
    resolved = cfg.copy()
    with open_dict(resolved):
        resolved.precision = auto_precision if precision == "auto" else precision
        resolved.channels_last = auto_channels_last if channels_last == "auto" else channels_last
    return resolved


def run(cfg: DictConfig) -> list[Any]:
    """Animate ``cfg.source`` (an image or a folder) with ``cfg.driving``; returns one result per source."""
    backend = cfg.get("backend", "pytorch")
    if backend not in BACKENDS:
        raise AnimationInputError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    cfg = resolve_speed(cfg)
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
        speed = PerformanceSettings(bool(cfg.get("channels_last", False)), bool(cfg.get("nnpack", False)))
        speed.apply([model.network])
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
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors():  # AnimationInputError is a ReenactError
        run(cfg)


def main() -> None:
    """``python -m reenact.animate`` and ``reenact-animate``: a family's own transfer options are accepted at the top
    level of the command line (``adapt_movement_scale=true``) and passed on as ``transfer_options``."""
    sys.argv[1:] = family_option_overrides(sys.argv[1:], "animate")
    _hydra_main()


def family_option_overrides(args: Sequence[str], config_name: str, section: str = "transfer_options") -> list[str]:
    """Command-line overrides with every ``name=value`` whose ``name`` is not a top-level key of the config
    ``config_name`` but is a transfer option that some registered family declares (``transfer_options``) rewritten
    as ``+section.name=value``, so that a family's own options are given by their names alone."""
    options = {name for family in registered_families().values() for name in family.transfer_options}
    if not options:
        return list(args)
    keys = set(OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml"))
    rewritten = []
    for arg in args:
        name, equals, value = arg.partition("=")
        if equals and name in options and name not in keys:
            arg = f"+{section}.{name}={value}"
        rewritten.append(arg)
    return rewritten


if __name__ == "__main__":
    main()
