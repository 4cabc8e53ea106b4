"""VGG19 feature networks on ImageNet weights (Simonyan & Zisserman), shared by the perceptual loss
(:mod:`reenact.losses.perceptual`) and the correlation feature field (:mod:`reenact.families.correlation.vgg_pool4`).

:class:`VGG19Features` returns the five relu_1 maps (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of torchvision's
vgg19().features, indices 0-1, 2-6, 7-11, 12-20, 21-29); only those 30 layers are built, the classifier is never
allocated. It is a fixed feature extractor, not part of a model:
  * its weights are frozen (``requires_grad=False``) so no optimiser can update them,
  * it stays in eval mode even when a parent calls ``.train()``,
  * it removes its own weights from ``state_dict()`` (checkpoints stay small and independent of where the VGG
    weights came from) and, on ``load_state_dict``, fills the absent keys with its current weights so strict
    loading of a checkpoint without VGG still succeeds. A checkpoint that does contain VGG keys loads them.
Build optimisers from the networks' parameters, not from every parameter of a module holding it: the frozen VGG
tensors still show up in ``.parameters()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_VGG_SLICES = len(_SLICE_ENDS)


def build_vgg19_layers() -> nn.Sequential:
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


def vgg19_features_subset(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
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
        self.features = build_vgg19_layers()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
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
        subset = vgg19_features_subset(state_dict)
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
