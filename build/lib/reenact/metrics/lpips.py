"""LPIPS perceptual distance per frame (the ``lpips`` package, AlexNet backbone by default).

``lpips`` 0.1.4 ships its linear heads (``weights/v0.1/<net>.pth``) but takes the backbone from
torchvision, which downloads ImageNet weights (or finds them in ``$TORCH_HOME/hub/checkpoints``).
Three ways to get a backbone:
- default: torchvision's pretrained weights (download or torch hub cache) — the real metric;
- ``backbone_weights=PATH``: a local torchvision state dict for the same network (e.g.
  ``alexnet-owt-7be5be79.pth``), loaded with ``weights_only=True`` — the real metric, offline;
- ``pnet_rand=True``: a random backbone (always the same one: seeded) with the real heads — only for tests
  and for comparing runs with each other offline, *not* comparable with any published LPIPS.
Not part of the FOMM protocol; reported by later works under their own protocols.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from reenact.metrics.backends import describe
from reenact.metrics.frames import FrameSequence, Video, check_same_length

_NETS = ("alex", "vgg", "squeeze")
PNET_RAND_SEED = 0


class LPIPSMetric:
    """Learned perceptual image patch similarity; 0 for identical frames, larger is less similar."""

    def __init__(
        self,
        net: str = "alex",
        backbone_weights: str | None = None,
        pnet_rand: bool = False,
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        import lpips  # the PyPI package; this module's own name does not shadow it (absolute import)

        if net not in _NETS:
            raise ValueError(f"LPIPS net must be one of {_NETS}, got {net!r}")
        if backbone_weights is not None and not Path(backbone_weights).is_file():
            raise FileNotFoundError(f"LPIPS backbone weights not found: {backbone_weights}")
        self.net_name = net
        self.device = torch.device(device)
        self.batch_size = batch_size
        random_backbone = pnet_rand or backbone_weights is not None  # never download when a file is given
        with warnings.catch_warnings():  # lpips still calls torchvision with the deprecated `pretrained=`
            warnings.filterwarnings("ignore", message="Arguments other than a weight enum", category=UserWarning)
            warnings.filterwarnings("ignore", message="The parameter 'pretrained' is deprecated")
            try:
                # A random backbone is drawn from a fixed seed, so every run (and every row of a results table)
                # scores with the same network; the caller's random state is left untouched.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(PNET_RAND_SEED)
                    self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
            except OSError as exc:  # URLError: the ImageNet backbone is neither cached nor downloadable
                raise OSError(
                    f"LPIPS '{net}' backbone weights are not in the torch hub cache and could not be "
                    f"downloaded ({exc}); pass a local file as backbone_weights "
                    "(metrics.lpips_backbone_weights=PATH)"
                ) from None
        if backbone_weights is not None:
            _load_backbone(self.model.net, backbone_weights)
            self._backbone = f"file:{Path(backbone_weights).name}"
        else:
            self._backbone = (
                f"random (pnet_rand, seed {PNET_RAND_SEED}; tests only)" if pnet_rand else "torchvision ImageNet"
            )
        self.model.eval().to(self.device)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def per_frame(
        self,
        prediction: Video,
        target: Video,
    ) -> torch.Tensor:
        """LPIPS of each frame pair, (T,) float32 on the CPU."""
        prediction, target = FrameSequence.wrap(prediction), FrameSequence.wrap(target)
        check_same_length(prediction, target)
        values = []
        for start in range(0, len(prediction), self.batch_size):
            stop = min(start + self.batch_size, len(prediction))
            pred = prediction.float_chunk(start, stop, self.device)  # (n, 3, H, W) in [0, 1]
            true = target.float_chunk(start, stop, self.device)
            distance = self.model(pred, true, normalize=True)  # (n, 1, 1, 1); normalize maps to [-1, 1]
            values.append(distance.reshape(-1).float().cpu())
        return torch.cat(values) if values else torch.zeros(0)

    def __call__(
        self,
        prediction: Video,
        target: Video,
    ) -> float:
        """Mean LPIPS over frames."""
        return float(self.per_frame(prediction, target).mean())

    @property
    def backend(self) -> dict[str, object]:
        return describe("lpips", net=self.net_name, version_of_heads="0.1", backbone=self._backbone)


def _load_backbone(backbone: torch.nn.Module, path: str) -> None:
    """Copies a torchvision ``features.<i>.*`` state dict into lpips' ``slice<k>.<i>.*`` layers."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    mapped = {}
    for key in backbone.state_dict():
        _, index_and_param = key.split(".", 1)  # "slice2.3.weight" -> "3.weight"
        source_key = f"features.{index_and_param}"
        if source_key not in state:
            raise KeyError(f"LPIPS backbone weights {path} lack key {source_key!r} (not a torchvision state dict?)")
        mapped[key] = state[source_key]
    backbone.load_state_dict(mapped)
