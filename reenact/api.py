"""Python API: load a trained checkpoint and run it.

    import reenact
    model = reenact.load_pretrained("logs/train/runs/<run>/checkpoints/last.ckpt", device="cpu")
    out = model.reconstruct(source, driving)          # tensors (B, 3, H, W) in [0, 1]
    frames = model.animate(source_image, driving_frames, relative=True)   # (T, 3, H, W)

Files in, video out (face cropping, audio, paste-back): :func:`reenact.animation.video_job.animate_files`, or
``python -m reenact.animate ckpt_path=CKPT source=IMAGE driving=VIDEO output=OUT.mp4``.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint is data, never code. The network is
rebuilt from the model config stored in the checkpoint by the training task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

NETWORK_PREFIX = "network."


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not match the requested model (one-line message)."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint we can read"
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a reenact checkpoint (no 'state_dict')")
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


def load_network_weights(network: nn.Module, path: str | Path) -> None:
    """Fill ``network`` from a checkpoint's network weights; a mismatch lists the missing and unexpected keys."""
    load_module_weights(network, read_checkpoint(path), NETWORK_PREFIX, str(path))


class PretrainedModel:
    """A trained network in eval mode with the two operations users need: reconstruct and animate."""

    def __init__(self, network: nn.Module, frame_size: int, device: torch.device, config: dict[str, Any]) -> None:
        self.network = network.eval().to(device)
        self.frame_size = frame_size
        self.device = device
        self.config = config
        self.family: str = getattr(network, "family", "unknown")

    @torch.no_grad()
    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        """source, driving: (B, 3, H, W) in [0, 1] -> dict with prediction, kp_source, kp_driving, deformation, ..."""
        return self.network(source.to(self.device), driving.to(self.device))

    @torch.no_grad()
    def animate(
        self,
        source_image: torch.Tensor,
        driving_frames: torch.Tensor,
        relative: bool = True,
        adapt_movement_scale: bool = False,
        batch_size: int = 16,
        reference_frame: int | str = "first",
        precision: str = "fp32",
        progress: bool = False,
    ) -> torch.Tensor:
        """Drive one source image (3, H, W) with frames (T, 3, H, W), both in [0, 1] and already cropped;
        returns (T, 3, H', W') in [0, 1] on the CPU. Inputs of another size are resized to ``frame_size``.

        relative: relative motion (FOMM's normalize_kp, LivePortrait's relative pose); False copies the
        driving keypoints (FOMM) or the driving pose and expression (3D family). adapt_movement_scale:
        FOMM only. reference_frame: ``"first"``, ``"best"`` (the driving frame whose pose is closest to the
        source's) or a frame index. precision: ``"fp32"`` or ``"bf16"`` (autocast).
        """
        from reenact.animation.pipeline import animate_frames
        from reenact.models.geometry import resize_to

        size = (self.frame_size, self.frame_size)
        source = resize_to(source_image[None].to(self.device, torch.float32), size)[0]
        return animate_frames(self.network, source, driving_frames, relative=relative,
                              adapt_movement_scale=adapt_movement_scale, batch_size=batch_size,
                              reference_frame=reference_frame, precision=precision, progress=progress)


def checkpoint_family(checkpoint: dict[str, Any]) -> str:
    """The model family a checkpoint holds ("fomm", "liveportrait"), from its stored metadata."""
    meta = checkpoint.get("reenact") or {}
    family = meta.get("family")
    if family:
        return str(family)
    target = str(((meta.get("model_config") or {}).get("network") or {}).get("_target_", ""))
    if ".liveportrait." in target:
        return "liveportrait"
    return "fomm" if target.endswith("FirstOrderMotionModel") else "unknown"


def load_pretrained(
    path: str | Path, device: str | torch.device = "cpu", expected_family: str | None = None
) -> PretrainedModel:
    """The network of a training checkpoint (a file or a run directory), in eval mode on ``device``
    (``"auto"``: CUDA when available). ``expected_family`` ("fomm" or "liveportrait") makes a checkpoint
    of another family fail with a one-line :class:`CheckpointError` before anything is built."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("reenact") or {}
    model_config = meta.get("model_config")
    if not model_config or "network" not in model_config:
        raise CheckpointError(f"{path} has no stored model config; was it written by reenact's train.py?")
    family = checkpoint_family(checkpoint)
    if expected_family is not None and family != expected_family:
        raise CheckpointError(f"checkpoint {path} holds a {family!r} model, not the requested {expected_family!r}")
    network = instantiate(OmegaConf.create(model_config["network"]))
    load_network_weights(network, path)
    data_config = meta.get("data_config") or {}
    frame_size = int(data_config.get("frame_size", 256))
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return PretrainedModel(network, frame_size, torch.device(device), model_config)
