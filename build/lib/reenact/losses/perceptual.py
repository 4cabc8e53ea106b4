"""Multi-scale VGG19 perceptual loss (FOMM §3 "perceptual loss"; face-vid2vid's L_P).

L_P = Σ_scales Σ_l w_l · mean |VGG_l(ŷ_s) − VGG_l(y_s)| over the pyramid levels s of prediction ŷ and target
y, with l = relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of an ImageNet-trained VGG19 (torchvision feature
indices 0–1, 2–6, 7–11, 12–20, 21–29). Only those 30 layers are built: the classifier is never allocated.

VGG is a fixed feature extractor, not part of the model, so :class:`VGG19Features`
  * freezes its weights (``requires_grad=False``) so no optimiser can update them,
  * stays in eval mode even when a parent calls ``.train()``,
  * removes its own weights from ``state_dict()`` (checkpoints stay small and independent of where the VGG
    weights came from) and, on ``load_state_dict``, fills the absent keys with its current weights so strict
    loading of a checkpoint without VGG still succeeds. A checkpoint that does contain VGG keys loads them.
Build optimisers from the networks' parameters (generator, keypoint detector), not from every parameter of
a module holding this loss: the frozen VGG tensors still show up in ``.parameters()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.losses.pyramid import ImagePyramid

# Output channels of the VGG19 convolutions up to conv5_1; "M" is a 2x2 max pool.
_VGG19_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
)
# End index (exclusive) of each slice in torchvision's vgg19().features: relu1_1 .. relu5_1.
_SLICE_ENDS: tuple[int, ...] = (2, 7, 12, 21, 30)
_NUM_LAYERS = _SLICE_ENDS[-1]
# Four 2x2 max pools before relu5_1: a smaller input leaves an empty feature map.
_MIN_INPUT_SIZE = 16
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_VGG_SLICES = len(_SLICE_ENDS)


def _build_vgg19_layers() -> nn.Sequential:
    """torchvision's vgg19().features[:30] with the same indices, so its state-dict keys map one to one."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(item, int)
        layers.append(nn.Conv2d(in_channels, item, kernel_size=3, padding=1))
        # in place is safe: no slice starts with a ReLU, so no returned feature map is overwritten
        layers.append(nn.ReLU(inplace=True))
        in_channels = item
    assert len(layers) == _NUM_LAYERS
    return nn.Sequential(*layers)


def _features_subset(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Keep the entries of layers 0..29 from a full vgg19 state dict ("features.N.*", "classifier.*") or a
    features-only one ("N.*"); return them keyed "N.weight"/"N.bias"."""
    subset: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        local = key.removeprefix("features.")
        index, _, _ = local.partition(".")
        if index.isdigit() and int(index) < _NUM_LAYERS:
            subset[local] = value
    return subset


def _drop_own_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    # checkpoints written without VGG: supply the current weights so strict loading sees nothing missing
    for name, tensor in module.named_parameters():
        state_dict.setdefault(prefix + name, tensor.detach())


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the five relu_1 feature maps of ImageNet-normalised [0, 1] RGB images.

    forward: (B, 3, H, W) in [0, 1], H, W >= 16 -> [relu1_1 (B, 64, H, W), relu2_1 (B, 128, H/2, W/2),
    relu3_1 (B, 256, H/4, W/4), relu4_1 (B, 512, H/8, W/8), relu5_1 (B, 512, H/16, W/16)].

    Weights: ``weights_path`` (a local state dict, full vgg19 or features-only) takes precedence; otherwise
    ``pretrained=True`` fetches torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (downloads once into the torch
    hub cache); ``pretrained=False`` keeps torchvision's random initialisation (tests only: the loss is then
    not perceptual).
    """

    def __init__(self, pretrained: bool = True, weights_path: str | None = None) -> None:
        super().__init__()
        self.features = _build_vgg19_layers()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_like_torchvision()
        if weights_path is not None:
            self._load_features(load_vgg19_state_dict(weights_path), source=str(weights_path))
        elif pretrained:
            from torchvision.models import VGG19_Weights

            weights = VGG19_Weights.IMAGENET1K_V1
            self._load_features(weights.get_state_dict(progress=True, weights_only=True), source=weights.url)
        self.requires_grad_(False)
        super().train(False)
        self.register_state_dict_post_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_fill_own_keys)

    def _init_like_torchvision(self) -> None:
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def _load_features(self, state_dict: dict[str, Any], source: str) -> None:
        subset = _features_subset(state_dict)
        expected = self.features.state_dict()
        missing = sorted(set(expected) - set(subset), key=lambda key: int(key.split(".")[0]))
        if missing:
            raise KeyError(
                f"VGG19 weights from {source} lack key '{missing[0]}' ({len(missing)} missing in all)"
            )
        for key, tensor in expected.items():
            if subset[key].shape != tensor.shape:
                raise ValueError(
                    f"VGG19 weights from {source}: key '{key}' has shape {tuple(subset[key].shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
        self.features.load_state_dict(subset, strict=True)

    def train(self, mode: bool = True) -> VGG19Features:
        # a fixed feature extractor: ignore the parent's train() so it always runs in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < _MIN_INPUT_SIZE:
            raise ValueError(
                f"VGG19Features needs H, W >= {_MIN_INPUT_SIZE} (four max pools), got {tuple(x.shape[2:])}"
            )
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # (B, 3, H, W)
        outputs: list[torch.Tensor] = []
        start = 0
        for end in _SLICE_ENDS:
            for index in range(start, end):
                h = self.features[index](h)
            outputs.append(h)
            start = end
        return outputs


def load_vgg19_state_dict(weights_path: str | Path) -> dict[str, Any]:
    """Read a local VGG19 state dict with ``weights_only=True``; one-line error when the file is absent."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"VGG19 weights file {path} holds a {type(state).__name__}, expected a state dict")
    return state


class PerceptualPyramidLoss(nn.Module):
    """Σ over pyramid scales and the five VGG19 slices of w_l · mean |VGG_l(ŷ_s) − VGG_l(y_s)|.

    forward(prediction (B, 3, H, W), target (B, 3, H, W)), both in [0, 1] -> scalar. Target features are
    computed without gradient. The smallest scale times H and W must be >= 16 (e.g. 128 px for 0.125).
    Layers with weight 0 are skipped in the sum.
    """

    def __init__(
        self,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
        pretrained: bool = True,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if len(layer_weights) != NUM_VGG_SLICES:
            raise ValueError(
                f"layer_weights needs {NUM_VGG_SLICES} values (relu1_1..relu5_1), got {list(layer_weights)}"
            )
        self.layer_weights = [float(weight) for weight in layer_weights]
        self.pyramid = ImagePyramid(list(scales), num_channels=3)
        self.vgg = VGG19Features(pretrained=pretrained, weights_path=weights_path)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}"
            )
        predicted_levels = self.pyramid(prediction)
        with torch.no_grad():
            target_levels = self.pyramid(target)
        total = prediction.new_zeros(())
        for scale, predicted in predicted_levels.items():
            predicted_features = self.vgg(predicted)
            with torch.no_grad():
                target_features = self.vgg(target_levels[scale])
            for weight, fake, real in zip(
                self.layer_weights, predicted_features, target_features, strict=True
            ):
                if weight != 0:
                    total = total + weight * (fake - real).abs().mean()
        return total
