"""Reading reenact checkpoints as data: the layer below both the training task and the user API.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint is data, never code. Every failure is a
one-line :class:`CheckpointError` naming the file. A checkpoint names its networks by module path (``_target_``);
:data:`LEGACY_TARGETS` maps the paths of classes that have moved to their current ones (:func:`upgrade_targets`), so
every checkpoint reenact wrote keeps loading.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.errors import ReenactError
from reenact.utils.messages import first_line

NETWORK_PREFIX = "network."


class CheckpointError(ReenactError, ValueError):
    """A checkpoint that is missing, unreadable or does not match the requested model (one-line message)."""


CHECKPOINT_NAME = "last.ckpt"


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file as given, or the last checkpoint of a run directory.

    A run directory resolves to ``RUN/checkpoints/last.ckpt`` (what training writes), or to ``RUN/last.ckpt``
    when ``RUN`` is itself a checkpoints folder. Raises a one-line :class:`CheckpointError` when there is none.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / CHECKPOINT_NAME, path / CHECKPOINT_NAME):
            if candidate.is_file():
                return candidate
        looked = path / "checkpoints" / CHECKPOINT_NAME
        newest = newest_complete_checkpoint(path)
        if newest is not None:  # e.g. a full disk stopped the run before it could write last.ckpt
            raise CheckpointError(f"no {CHECKPOINT_NAME} in {path} (looked for {looked}); the newest complete "
                                  f"checkpoint of the run is {newest}: pass ckpt_path={newest}")
        raise CheckpointError(f"no checkpoint in {path} (looked for {looked})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def newest_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recently written non-empty ``*.ckpt`` of a run folder (``RUN/checkpoints`` or ``RUN`` itself).

    Checkpoints are renamed into place only when whole (``reenact.callbacks.checkpointing.atomic_torch_save``), so
    any file under a ``.ckpt`` name is complete; the hidden temporaries of an interrupted write are not candidates.
    """
    run_dir = Path(run_dir)
    found = [p for folder in (run_dir / "checkpoints", run_dir) if folder.is_dir() for p in folder.glob("*.ckpt")
             if p.is_file() and not p.name.startswith(".") and p.stat().st_size > 0]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def load_error_reason(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words that never suggest loading the file as code."""
    message = str(error)
    if "Weights only load failed" in message or "WeightsUnpickler" in message:
        # PyTorch's own text advises re-running with weights_only=False: exactly what must never be done with a
        # file from elsewhere. Name the global the pickle tried to import (the code it would run) when given.
        named = re.search(r"GLOBAL ([\w.]+)", message)
        operand = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
        what = named.group(1) if named else operand.group(1).strip() if operand else "not plain tensor data"
        return (f"it holds more than tensors ({what}); reenact refuses to unpickle code "
                "(checkpoints are loaded with weights_only=True)")
    # The first sentence is the diagnosis; PyTorch appends paragraphs of speculation after it.
    sentence = first_line(error).split(". ")[0].rstrip(".")
    return f"truncated, damaged or not a PyTorch checkpoint ({type(error).__name__}: {sentence})"


def check_finite(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose weights or buffers hold NaN or inf (a diverged run): every output it
    produced would be garbage, so loading it is an error, not a warning."""
    from reenact.utils.finite import nonfinite_tensors

    bad = nonfinite_tensors(checkpoint["state_dict"])
    if bad:
        total = sum(1 for value in checkpoint["state_dict"].values() if isinstance(value, torch.Tensor))
        raise CheckpointError(
            f"checkpoint {path} has {len(bad)} of {total} tensors with NaN or inf values (e.g. {bad[0]}); "
            f"the run diverged: use an earlier checkpoint"
        )


def read_checkpoint(path: str | Path, require_finite: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file or a run directory), read as data only (``weights_only=True``).

    Every failure is a one-line :class:`CheckpointError` naming the file: missing, empty, truncated, not a
    reenact checkpoint, holding code, or (with ``require_finite``) holding non-finite weights or buffers.
    """
    path = resolve_checkpoint_path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # the weights-only unpickler warns about a file's pickle protocol before failing on it; the error
            # below says all there is to say, in one line
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint we can read"
        raise CheckpointError(f"cannot read checkpoint {path}: {load_error_reason(exc)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a reenact checkpoint (no 'state_dict')")
    if require_finite:
        check_finite(checkpoint, path)
    return checkpoint


def network_state_dict(checkpoint: dict[str, Any], prefix: str = NETWORK_PREFIX) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def load_module_weights(module: nn.Module, checkpoint: dict[str, Any], prefix: str, source: str) -> None:
    """Fill ``module`` from the ``prefix`` entries of a checkpoint; any mismatch is one error listing the keys."""
    state = network_state_dict(checkpoint, prefix)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"checkpoint {source} does not match the model ({prefix}*): missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {wrong_shape[:8]}"
        )
    module.load_state_dict(state, strict=True)




# Module paths of classes that moved (checkpoints store the ``_target_`` of every network they hold).
LEGACY_TARGETS = {
    "reenact.models.fomm.": "reenact.families.fomm.model.",
    "reenact.models.keypoint_detector.": "reenact.families.fomm.keypoint_detector.",
    "reenact.models.generator.": "reenact.families.fomm.generator.",
    "reenact.models.dense_motion.": "reenact.families.fomm.dense_motion.",
    "reenact.models.discriminator.": "reenact.layers.discriminator.",
    "reenact.models.liveportrait.model.": "reenact.families.liveportrait.model.",
    "reenact.models.liveportrait.": "reenact.families.liveportrait.",
    "reenact.layers.correlation_refiner.": "reenact.families.correlation.refiner.",
    "reenact.layers.feature_encoder.": "reenact.families.correlation.feature_encoder.",
    "reenact.layers.vgg_pool4.": "reenact.families.correlation.vgg_pool4.",
    "reenact.layers.warp_network.": "reenact.families.correlation.warp_network.",
    "reenact.losses.correlation.": "reenact.families.correlation.losses.",
}


def upgrade_targets(config: Any) -> Any:
    """A stored config with every ``_target_`` that names a moved class rewritten to its current path."""
    if isinstance(config, dict):
        upgraded = {key: upgrade_targets(value) for key, value in config.items()}
        target = upgraded.get("_target_")
        if isinstance(target, str):
            for old, new in LEGACY_TARGETS.items():
                if target.startswith(old):
                    upgraded["_target_"] = new + target[len(old):]
                    break
        return upgraded
    if isinstance(config, list):
        return [upgrade_targets(value) for value in config]
    return config


def checkpoint_metadata(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The ``reenact`` entry (family, model config, data config) with current class paths; one-line error when the
    checkpoint has none (not written by reenact's training task or converter)."""
    meta = checkpoint.get("reenact") or {}
    model_config = meta.get("model_config")
    if not model_config or "network" not in model_config or not meta.get("family"):
        raise CheckpointError(f"{path} has no stored model config; was it written by reenact's train.py?")
    return {**meta, "model_config": upgrade_targets(model_config)}


def initialise_from(network: nn.Module, discriminator: nn.Module | None, path: str | Path) -> str:
    """Fill a training task's network (and discriminator) from another run's or a converted release's checkpoint
    (``model.init_from``); returns what was taken, in words. Optimiser state is not read: it starts fresh.

    The discriminator is taken too when the checkpoint has one of the same architecture; otherwise a new one is
    trained (as FOMM's vox-256 -> vox-adv-256 stage does).
    """
    checkpoint = read_checkpoint(path)
    load_module_weights(network, checkpoint, NETWORK_PREFIX, str(path))
    message = f"initialised the network from {path}"
    if discriminator is not None:
        try:
            load_module_weights(discriminator, checkpoint, "discriminator.", str(path))
            message += " (discriminator too)"
        except CheckpointError:
            message += " (new discriminator: the checkpoint has none of this architecture)"
    return message
