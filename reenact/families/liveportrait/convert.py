"""Official LivePortrait base models -> reenact's ``liveportrait`` preset.

The release (HuggingFace ``KwaiVGI/LivePortrait``, folder ``liveportrait/base_models``) has one file per network:
``appearance_feature_extractor`` (F), ``motion_extractor`` (M), ``warping_module`` (W) and ``spade_generator``
(G), as ``.pth`` (or ``.safetensors`` in re-uploads). SOURCE is the folder holding the four files, or a folder
with ``liveportrait/base_models`` inside (the HuggingFace download itself). The second stage (stitching and eye/lip
retargeting MLPs) is read from ``retargeting_models/stitching_retargeting_module.pth`` beside the base models' folder
(the release's layout: ``liveportrait/base_models`` and ``liveportrait/retargeting_models``), and nowhere else: one
torch file holding three state dicts, ``retarget_shoulder`` (S), ``retarget_eye`` (R_eyes) and ``retarget_mouth``
(R_lip), each of ``mlp.<i>.weight/bias`` (a DDP ``module.`` prefix is dropped). Without that file the model is
converted without those networks, and the report says in one line that stitching and retargeting are off.

Keys: our F, M, W, G use the released names, except that M's heads are ``fc_*`` where the release has
``detector.fc_*``, and G's spectral-norm keys (see :mod:`reenact.convert.keymap`). The converted model config
sets ``warping_network.dense_motion_params.align_corners=false``: the release samples its corner-aligned
coordinate grid with ``grid_sample(align_corners=False)``, and its weights only compute what they were trained
to compute under that convention; and ``warped_skips=false``, because the release has no such connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from reenact.convert.checkpoint import (
    NETWORK,
    build_targets,
    compose_model_config,
    write_converted,
)
from reenact.convert.keymap import SPECTRAL_NORM_RENAMES, ConversionError, ConversionReport, Rename, convert_state
from reenact.convert.sources import as_state_dict, load_state_file, load_torch_file

FAMILY = "liveportrait"
DEFAULT_PRESET = "liveportrait"
# released file stem -> our submodule of LivePortraitModel
FILES = {
    "appearance_feature_extractor": "appearance_feature_extractor",
    "motion_extractor": "motion_extractor",
    "warping_module": "warping_network",
    "spade_generator": "spade_decoder",
}
EXTENSIONS = (".pth", ".safetensors")
HUGGINGFACE_SUBFOLDER = Path("liveportrait") / "base_models"
# the second stage: one file beside the base models' folder; its keys -> our networks
RETARGETING_FILE = Path("retargeting_models") / "stitching_retargeting_module.pth"
RETARGETING_STEM = "stitching_retargeting_module"
RETARGETING_KEYS = {
    "retarget_shoulder": "stitching_network",
    "retarget_eye": "eye_retargeting_network",
    "retarget_mouth": "lip_retargeting_network",
}
# a conversion without the second-stage file leaves the networks (and their optimiser group) out
WITHOUT_SECOND_STAGE = (
    *(f"model.network.{ours}=null" for ours in RETARGETING_KEYS.values()),
    "~model.groups.retargeting",
)
SECOND_STAGE_OFF = ("no retargeting_models/stitching_retargeting_module.pth beside the base models: stitching and "
                    "retargeting are off")
RENAMES = (
    Rename("motion_extractor.detector.fc_", f"{NETWORK}.motion_extractor.fc_"),  # before the plain M prefix
    *(Rename(f"{stem}.", f"{NETWORK}.{ours}.") for stem, ours in FILES.items()),
    *(Rename(f"{RETARGETING_STEM}.{key}.", f"{NETWORK}.{ours}.") for key, ours in RETARGETING_KEYS.items()),
    *SPECTRAL_NORM_RENAMES,
)
# the release samples with align_corners=False and has no warped skips (an option of reenact's small preset)
RELEASED_CONVENTION = (
    "model.network.warping_network.dense_motion_params.align_corners=false",
    "model.network.warped_skips=false",
    "model.network.warping_network.estimate_occlusion_map=true",
)


def find_liveportrait_files(source: str | Path) -> dict[str, Path]:
    """The four base-model files in ``source`` (or in ``source/liveportrait/base_models``), by released stem."""
    folder = Path(source)
    if not folder.is_dir():
        raise ConversionError(f"LivePortrait SOURCE must be a folder holding the four base models, got {folder}")
    if not any((folder / f"{stem}{ext}").is_file() for stem in FILES for ext in EXTENSIONS):
        if (folder / HUGGINGFACE_SUBFOLDER).is_dir():
            folder = folder / HUGGINGFACE_SUBFOLDER
    found: dict[str, Path] = {}
    missing, ambiguous = [], []
    for stem in FILES:
        candidates = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
        if not candidates:
            missing.append(f"{stem}{{{','.join(EXTENSIONS)}}}")
        elif len(candidates) > 1:
            ambiguous.append(stem)
        else:
            found[stem] = candidates[0]
    if missing or ambiguous:
        problems = [f"missing {missing}" if missing else "",
                    f"both .pth and .safetensors: {ambiguous}" if ambiguous else ""]
        raise ConversionError(f"{folder}: LivePortrait base models " + "; ".join(p for p in problems if p))
    return found


def find_retargeting_file(base_models: Path) -> Path | None:
    """The release's second-stage file beside the folder holding the base models, or None."""
    path = base_models.parent / RETARGETING_FILE
    return path if path.is_file() else None


def read_retargeting_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three state dicts of ``stitching_retargeting_module.pth`` by released key; one-line errors otherwise."""
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} is not a dict of the three second-stage state dicts "
                              f"(got {type(obj).__name__})")
    missing = [key for key in RETARGETING_KEYS if key not in obj]
    unknown = [str(key) for key in obj if key not in RETARGETING_KEYS]
    if missing or unknown:
        raise ConversionError(f"{path}: expected the keys {list(RETARGETING_KEYS)}; missing {missing}, "
                              f"unknown {unknown}")
    return {key: as_state_dict(obj[key], f"{path} [{key}]") for key in RETARGETING_KEYS}


def convert_liveportrait_states(
    states: Mapping[str, Mapping[str, torch.Tensor]],
    where: str,
    preset: str = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    retargeting: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], DictConfig, ConversionReport]:
    """``states``: released stem -> that file's state dict; ``retargeting``: the second-stage file's three state
    dicts by released key (``retarget_shoulder``, ``retarget_eye``, ``retarget_mouth``), or None to convert without
    the second stage. Returns our state dict, model config and report."""
    unknown = [stem for stem in states if stem not in FILES]
    absent = [stem for stem in FILES if stem not in states]
    if unknown or absent:
        raise ConversionError(
            f"{where}: LivePortrait needs the files {list(FILES)}; missing {absent}, unknown {unknown}"
        )
    tensors = {f"{stem}.{key}": value for stem, state in states.items() for key, value in state.items()}
    second_stage: tuple[str, ...] = ()
    if retargeting is None:
        second_stage = WITHOUT_SECOND_STAGE
    else:
        wrong = sorted(set(retargeting) ^ set(RETARGETING_KEYS))
        if wrong:
            raise ConversionError(f"{where}: the second-stage file needs the keys {list(RETARGETING_KEYS)}; "
                                  f"got {sorted(retargeting)}")
        tensors.update({f"{RETARGETING_STEM}.{name}.{key}": value for name, state in retargeting.items()
                        for key, value in state.items()})
    report = ConversionReport(source_format="liveportrait", source=where, preset=preset)
    family = compose_model_config(preset).get("family")  # before overriding LivePortrait-only keys
    if family != FAMILY:
        raise ConversionError(f"preset '{preset}' is not a LivePortrait preset (family {family})")
    model_cfg = compose_model_config(preset, [*RELEASED_CONVENTION, *second_stage, *overrides])
    if model_cfg.network.warping_network.dense_motion_params.get("align_corners", True):
        report.notes.append(
            "align_corners=true was requested: the released weights were trained with align_corners=false, "
            "so outputs will differ from the released code"
        )
    else:
        report.notes.append(
            "stored model config: warping_network.dense_motion_params.align_corners=false, the released sampling"
        )
    state = convert_state(tensors, build_targets(model_cfg, with_discriminator=False), RENAMES, report)
    report.notes.append("the release has no discriminator; a GAN fine-tune starts a new one")
    report.notes.append(SECOND_STAGE_OFF if retargeting is None else
                        "stitching and eye/lip retargeting converted from the second-stage file")
    return state, model_cfg, report


def convert_liveportrait(
    source: str | Path,
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    frame_size: int = 256,
) -> ConversionReport:
    """Convert the released base models in the folder ``source`` into the reenact checkpoint ``out``."""
    out = Path(out)
    files = find_liveportrait_files(source)
    states = {stem: load_state_file(path) for stem, path in files.items()}
    base_models = next(iter(files.values())).parent
    retargeting_path = find_retargeting_file(base_models)
    retargeting = read_retargeting_file(retargeting_path) if retargeting_path is not None else None
    state, model_cfg, report = convert_liveportrait_states(states, str(base_models), preset, overrides, retargeting)
    second_stage = WITHOUT_SECOND_STAGE if retargeting is None else ()
    return write_converted(state, "liveportrait", model_cfg, frame_size, report, out,
                           [f"model={preset}", *RELEASED_CONVENTION, *second_stage, *overrides])
