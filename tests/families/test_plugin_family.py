"""A family defined only here, a learned global affine warp, trains, validates, animates and evaluates through the
normal entry points: proof that adding a family needs no change to shared code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch import nn

from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, get_family, register_family
from tests.helpers.configs import train_config

HOMOGENEOUS_ROW = torch.tensor([0.0, 0.0, 1.0])


def _homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine -> (B, 3, 3)."""
    return torch.cat([theta, HOMOGENEOUS_ROW.to(theta).expand(theta.shape[0], 1, 3)], dim=1)


@register_family
class GlobalAffineWarp(ReenactmentFamily):
    """Motion = one affine map per frame (canonical -> frame coordinates); the prediction is the source warped by
    theta_s · theta_d⁻¹, refined by a small residual convolution. No keypoints."""

    family = "test_global_affine"
    transfer_modes = ("relative", "absolute")

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, hidden, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 6),
        )
        nn.init.zeros_(self.encoder[-1].weight)
        with torch.no_grad():
            self.encoder[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.refine = nn.Conv2d(3, 3, 3, padding=1)
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        return {"theta": self.encoder(frames).view(-1, 2, 3)}

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        batch = source.shape[0]
        warp = _homogeneous(source_motion["theta"].expand(batch, 2, 3)) @ torch.linalg.inv(
            _homogeneous(driving_motion["theta"]))
        grid = F.affine_grid(warp[:, :2], list(source.shape), align_corners=True)  # (B, H, W, 2)
        deformed = F.grid_sample(source, grid, align_corners=True)
        return {"prediction": (deformed + self.refine(deformed)).clamp(0, 1), "deformation": grid,
                "deformed": deformed}

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        motion_source, motion_driving = self.encode_motion(source), self.encode_motion(driving)
        return {**self.render(source, motion_source, motion_driving), "motion_source": motion_source,
                "motion_driving": motion_driving}

    def transfer_motion(self, source_motion: Motion, driving_motion: Motion, reference_motion: Motion,
                        mode: str = "relative") -> Motion:
        if mode == "absolute":
            return driving_motion
        moved = _homogeneous(source_motion["theta"]) @ torch.linalg.inv(_homogeneous(reference_motion["theta"])) \
            @ _homogeneous(driving_motion["theta"])
        return {"theta": moved[:, :2]}


def plugin_config(output_dir: Path, cache_dir: Path, extra: list[str] | None = None):
    """The default training config with the model's network, family, terms and learning rates replaced."""
    cfg = train_config(output_dir, cache_dir, ["trainer.max_epochs=2", "trainer.limit_train_batches=3", *(extra or [])])
    with open_dict(cfg):
        cfg.model.family = GlobalAffineWarp.family
        cfg.model.network = OmegaConf.create({"_target_": f"{__name__}.GlobalAffineWarp", "hidden": 8})
        cfg.model.objective.terms = OmegaConf.create({
            "reconstruction_l1": {"_target_": "reenact.losses.photometric.PyramidL1", "weight": 100.0},
            "warped_source_l1": {"_target_": "reenact.losses.photometric.WarpedSourceL1", "weight": 10.0},
        })
        cfg.model.lr = OmegaConf.create({"generator": 3e-3})
        cfg.model.groups = OmegaConf.create({})  # its one group trains with the defaults
        cfg.model.discriminator = None  # no adversarial term
        cfg.model.channels_last = False
    return cfg


def test_the_plugin_is_registered() -> None:
    assert get_family("test_global_affine") is GlobalAffineWarp


def test_plugin_family_trains_validates_animates_and_evaluates(tmp_path: Path) -> None:
    from reenact.cli.train import run as train

    cache = tmp_path / "cache"
    metrics, _ = train(plugin_config(tmp_path / "run", cache))
    assert np.isfinite(metrics["val/l1"]) and metrics["val/l1_copy_source"] > 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["reenact"]["family"] == "test_global_affine"
    assert any((tmp_path / "run" / "images").glob("reconstruction_epoch*.png")), "visuals work without keypoints"

    # the Python API and relative animation: the first driving frame as reference reproduces the source's motion
    import reenact

    model = reenact.load_pretrained(checkpoint)
    assert model.family == "test_global_affine"
    source = torch.rand(3, 64, 64)
    driving = torch.rand(5, 3, 64, 64)
    frames = model.animate(source, driving, relative=True, reference_frame="best")
    assert frames.shape == (5, 3, 64, 64) and torch.isfinite(frames).all()

    # the animate entry point on a real file pair
    from reenact.data.video_writer import write_video
    from tests.test_animate import animate

    video = tmp_path / "driving.mp4"
    write_video(video, (driving.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), fps=10)
    image = tmp_path / "source.png"
    from PIL import Image

    Image.fromarray((source.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(image)
    animate(checkpoint, image, video, tmp_path / "out" / "animated.mp4", "crop.source=false", "crop.driving=false",
            "side_by_side=true")
    assert (tmp_path / "out" / "animated.mp4").is_file()

    # the evaluate entry point on the run's synthetic test split
    from reenact.cli.evaluate import evaluate
    from reenact.utils.hydra_utils import compose_config
    from tests.helpers.configs import TINY_DATA

    synthetic = [o for o in TINY_DATA if o.startswith("data.synthetic.")]
    cfg = compose_config("evaluate", [f"ckpt_path={checkpoint}", "data=synthetic", *synthetic,
                                      f"paths.cache_dir={cache}", f"paths.output_dir={tmp_path / 'eval'}",
                                      "max_videos=1", "max_frames=4", "metrics.names=[l1]"])
    payload = evaluate(cfg)
    assert payload == json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert payload["counts"]["videos"] == 1 and payload["overall"]["l1"] >= 0


def test_plugin_family_learns(tmp_path: Path) -> None:
    """A few steps on a fixed pair: the objective falls (the warp and the refinement train)."""
    torch.manual_seed(0)
    network = GlobalAffineWarp()
    source = torch.rand(2, 3, 32, 32)
    driving = torch.roll(source, shifts=2, dims=-1)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = (network(source, driving)["prediction"] - driving).abs().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
