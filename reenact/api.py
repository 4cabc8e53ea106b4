"""Python API: load a trained checkpoint and run it.

    import reenact
    model = reenact.load_pretrained("logs/train/runs/<run>/checkpoints/last.ckpt", device="cpu")
    out = model.reconstruct(source, driving)          # tensors (B, 3, H, W) in [0, 1]
    frames = model.animate(source_image, driving_frames, transfer="relative")   # (T, 3, H, W)
    frames = model.animate(sources, driving_frames)   # several images of one person (S, 3, H, W), where the family
                                                      # renders from several (model.network.max_sources)

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

from reenact.animation.settings import AnimationSettings
from reenact.checkpoints import (
    NETWORK_PREFIX,
    CheckpointError,
    checkpoint_metadata,
    load_module_weights,
    read_checkpoint,
)
from reenact.families.base import ReenactmentFamily, get_family

__all__ = ["AnimationSettings", "CheckpointError", "PretrainedModel", "load_pretrained", "read_checkpoint"]

class PretrainedModel:
    """A trained network in eval mode with the two operations users need: reconstruct and animate."""

    def __init__(
        self, network: ReenactmentFamily, frame_size: int, device: torch.device, config: dict[str, Any]
    ) -> None:
        self.network = network.eval().to(device)
        self.frame_size = frame_size
        self.device = device
        self.config = config
        self.family: str = network.family

    @torch.no_grad()
    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        """source, driving: (B, 3, H, W) in [0, 1] -> the family's output: ``prediction`` (B, 3, H', W'),
        ``motion_source``, ``motion_driving`` and, where the family has them, ``deformation``, ``occlusion_map``,
        ``deformed`` (:class:`reenact.families.base.ModelOutput`)."""
        return self.network(source.to(self.device), driving.to(self.device))

    @torch.no_grad()
    def animate(
        self,
        source_image: torch.Tensor,
        driving_frames: torch.Tensor,
        settings: AnimationSettings | None = None,
        **changes: Any,
    ) -> torch.Tensor:
        """Drive one source image (3, H, W), or several images of one person (S, 3, H, W) for a family that
        renders from several (others refuse them in one line), with frames (T, 3, H, W), all in [0, 1] and already
        cropped;
        returns (T, 3, H', W') in [0, 1] on the CPU. Inputs of another size are resized to ``frame_size``.

        ``settings`` (:class:`reenact.animation.settings.AnimationSettings`; progress off by default), or its fields
        as keywords: ``transfer`` (a mode of the family's ``transfer_modes``, e.g. ``"relative"``, ``"absolute"``;
        None: the family's default), ``reference_frame`` (``"first"``, ``"best"``: the driving frame whose pose is
        closest to the source's, or a frame index), ``batch_size``, ``precision`` (``"fp32"`` or ``"bf16"``),
        ``max_frames``. ``relative=True/False`` is the older spelling of ``transfer``. Any other keyword is one of
        the family's own transfer options (``transfer_options``, e.g. FOMM's ``adapt_movement_scale``); a mode or
        option the family lacks is refused in one line.
        """
        from reenact.animation.pipeline import animate_frames
        from reenact.layers.geometry import resize_to

        size = (self.frame_size, self.frame_size)
        images = source_image if source_image.dim() == 4 else source_image[None]  # (S, 3, H, W)
        source = resize_to(images.to(self.device, torch.float32), size)
        source = source if source_image.dim() == 4 else source[0]
        return animate_frames(self.network, source, driving_frames, settings, **changes)


def load_pretrained(
    path: str | Path, device: str | torch.device = "cpu", expected_family: str | None = None
) -> PretrainedModel:
    """The network of a training checkpoint (a file or a run directory), in eval mode on ``device``
    (``"auto"``: CUDA when available). ``expected_family`` (a registered family name) makes a checkpoint
    of another family fail with a one-line :class:`CheckpointError` before anything is built, as does any
    checkpoint :func:`read_checkpoint` refuses (missing, empty, truncated, holding code or NaN/inf tensors)."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint_metadata(checkpoint, path)
    model_config, family = meta["model_config"], str(meta["family"])
    if expected_family is not None and family != expected_family:
        raise CheckpointError(f"checkpoint {path} holds a {family!r} model, not the requested {expected_family!r}")
    network = instantiate(OmegaConf.create(model_config["network"]))
    if not isinstance(network, ReenactmentFamily) or network.family != family:
        raise CheckpointError(f"checkpoint {path} says family {family!r} but its network config builds "
                              f"{type(network).__qualname__}")
    get_family(family)  # registered (instantiating the network imported its module)
    load_module_weights(network, checkpoint, NETWORK_PREFIX, str(path))  # the checkpoint already read, not again
    data_config = meta.get("data_config") or {}
    frame_size = int(data_config.get("frame_size", 256))
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return PretrainedModel(network, frame_size, torch.device(device), model_config)
