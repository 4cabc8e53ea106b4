"""FID between the set of predicted frames and the set of ground-truth frames (torchmetrics).

FID is a distribution distance, so it is reported for the whole evaluation, never per video. The
feature extractor is configurable:
- ``"inception"``: torchmetrics' default, torch-fidelity's port of the TF-Inception used by standard FID
  (2048-d pool features). Needs ``torch-fidelity`` installed and its weights, downloaded on first use
  or given as a local file with ``weights_path`` (``pt_inception-2015-12-05-6726825d.pth``).
- ``"torchvision_inception"``: torchvision's ImageNet Inception-v3 from a local state dict
  (``weights_path``, e.g. ``inception_v3_google-0cc3c7bd.pth``), 2048-d pool features. Runs offline but
  its numbers are NOT comparable with published FID values.
- any ``nn.Module`` mapping float (n, 3, H, W) in [0, 1] to (n, D) features (e.g. built by Hydra from a
  ``_target_`` node); give it an integer ``num_features`` attribute to skip torchmetrics' dummy pass.
Not part of the FOMM protocol.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionInceptionFeatures(nn.Module):
    """torchvision Inception-v3 pool features (n, 2048) from [0, 1] frames, weights from a local file."""

    num_features = 2048

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"Inception-v3 weights not found: {weights_path}")
        self.network = inception_v3(weights=None, aux_logits=True, init_weights=False)
        self.network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.network.fc = nn.Identity()  # keep the 2048-d pooled features, drop the classifier
        self.network.eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(
            images.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True
        )  # (n, 3, 299, 299)
        return self.network((images - self.mean) / self.std)  # (n, 2048)

    def train(self, mode: bool = True) -> TorchvisionInceptionFeatures:
        return super().train(False)  # batch-norm statistics must stay frozen


class FIDMetric:
    """Accumulates predicted and ground-truth frames; ``compute()`` returns the Fréchet distance."""

    def __init__(
        self,
        feature_extractor: str | nn.Module = "inception",
        weights_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.device = torch.device(device)
        self.batch_size = batch_size
        if isinstance(feature_extractor, nn.Module):
            feature: int | nn.Module = feature_extractor.eval()
            self._extractor = f"custom:{type(feature_extractor).__module__}.{type(feature_extractor).__name__}"
        elif feature_extractor == "torchvision_inception":
            if weights_path is None:
                raise ValueError("FID feature_extractor 'torchvision_inception' needs weights_path (a local file)")
            feature = TorchvisionInceptionFeatures(weights_path)
            self._extractor = f"torchvision_inception:file:{Path(weights_path).name} (not comparable)"
        elif feature_extractor == "inception":
            feature = 2048
            self._extractor = "torch-fidelity inception-v3-compat (standard FID features)"
        else:
            raise ValueError(
                f"unknown FID feature_extractor {feature_extractor!r}; "
                "use 'inception', 'torchvision_inception' or an nn.Module"
            )
        weights = weights_path if feature_extractor == "inception" else None
        self.metric = FrechetInceptionDistance(
            feature=feature, normalize=True, reset_real_features=True, feature_extractor_weights_path=weights
        ).to(self.device)
        self.num_real = 0
        self.num_fake = 0

    @torch.no_grad()
    def update(
        self,
        prediction: Video,
        target: Video,
    ) -> None:
        """Adds the predicted frames to the generated set and the target frames to the real set."""
        for video, real in ((FrameSequence.wrap(prediction), False), (FrameSequence.wrap(target), True)):
            for chunk in video.float_chunks(self.batch_size, self.device):  # (n, 3, H, W) in [0, 1]
                self.metric.update(chunk, real=real)
            if real:
                self.num_real += len(video)
            else:
                self.num_fake += len(video)

    def compute(self) -> float:
        if self.num_real < 2 or self.num_fake < 2:
            raise ValueError(
                f"FID needs at least 2 frames per set, got {self.num_fake} predicted "
                f"and {self.num_real} ground-truth frames"
            )
        return float(self.metric.compute())

    def reset(self) -> None:
        self.metric.reset()
        self.num_real = self.num_fake = 0

    @property
    def backend(self) -> dict[str, object]:
        return describe(
            "torchmetrics",
            feature_extractor=self._extractor,
            frames={"predicted": self.num_fake, "ground_truth": self.num_real},
        )
