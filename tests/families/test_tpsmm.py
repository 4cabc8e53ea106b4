"""The TPSMM family (issue 30): the release's layout and parameter counts, the thin-plate splines, the TPS-dropout
schedule, the warp and background losses, the transfer modes, the converter and the staged (AVD) training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from torchvision.models import resnet18

from reenact.families.tpsmm.convert import convert_tpsmm, convert_tpsmm_object
from reenact.families.tpsmm.dense_motion import TPSDenseMotionNetwork
from reenact.families.tpsmm.losses import BackgroundLoss, WarpLoss
from reenact.families.tpsmm.model import AVDUntrainedError, ThinPlateSplineMotionModel
from reenact.families.tpsmm.tps import solve_tps, tps_grids, warp_points
from reenact.layers.geometry import AntiAliasInterpolation2d, make_coordinate_grid
from reenact.losses.terms import LossContext
from reenact.utils.hydra_utils import compose_config, to_plain

FRAME = 64
# the reference's counts per network (python -m reenact.info model=tpsmm must print exactly these)
RELEASE_PARAMETERS = {"kp_detector": 11_227_812, "dense_motion_network": 37_941_397,
                      "inpainting_network": 24_737_283, "bg_predictor": 11_188_998, "avd_network": 2_583_652}
RELEASE_ENTRIES = {"kp_detector": 122, "dense_motion_network": 59, "inpainting_network": 78, "bg_predictor": 122,
                   "avd_network": 69}


def compose_model(preset: str, *overrides: str):
    cfg = compose_config("train", [f"model={preset}", *overrides, "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    with open_dict(cfg.model):
        for term in (cfg.model.objective.terms or {}).values():
            if term is not None and "vgg_pretrained" in term:
                term.vgg_pretrained = False
    return cfg.model


def build_task(preset: str = "tpsmm_small", *overrides: str):
    model = compose_model(preset, *overrides)
    return instantiate(model, _partial_=True)(model_config=to_plain(model), data_config={"frame_size": FRAME})


def frames(batch: int = 2, seed: int = 0, size: int = FRAME) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def small_task():
    torch.manual_seed(0)
    return build_task()


# ------------------------------------------------------------------------------------------- the release's layout
def release_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of every network of the released vox.pth.tar, written from the architecture (the reference's
    description of the original modules), not from reenact's modules."""

    def conv(prefix: str, c_in: int, c_out: int, k: int) -> dict[str, tuple[int, ...]]:
        return {f"{prefix}.weight": (c_out, c_in, k, k), f"{prefix}.bias": (c_out,)}

    def norm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:  # affine InstanceNorm: no running statistics
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)}

    def block(prefix: str, c_in: int, c_out: int, k: int = 3) -> dict[str, tuple[int, ...]]:
        return {**conv(f"{prefix}.conv", c_in, c_out, k), **norm(f"{prefix}.norm", c_out)}

    def batchnorm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    def linear(prefix: str, a: int, b: int) -> dict[str, tuple[int, ...]]:
        return {f"{prefix}.weight": (b, a), f"{prefix}.bias": (b,)}

    def resnet(prefix: str, in_channels: int, outputs: int) -> dict[str, tuple[int, ...]]:
        shapes = {k: tuple(v.shape) for k, v in resnet18(weights=None).state_dict().items()}
        shapes["conv1.weight"] = (64, in_channels, 7, 7)
        shapes["fc.weight"], shapes["fc.bias"] = (outputs, 512), (outputs,)
        return {f"{prefix}.{k}": v for k, v in shapes.items()}

    dense: dict[str, tuple[int, ...]] = {"down.weight": (3, 1, 13, 13)}
    for i, (a, b) in enumerate([(84, 128), (128, 256), (256, 512), (512, 1024), (1024, 1024)]):
        dense |= block(f"hourglass.encoder.down_blocks.{i}", a, b)
    for i, (a, b) in enumerate([(1024, 1024), (2048, 512), (1024, 256), (512, 128), (256, 64)]):
        dense |= block(f"hourglass.decoder.up_blocks.{i}", a, b)
    dense |= conv("maps", 148, 11, 7) | block("up.0", 148, 74) | block("up.1", 74, 37)
    for i, c in enumerate([256, 148, 74, 37]):
        dense |= conv(f"occlusion.{i}", c, 1, 7)

    inpainting = {**block("first", 3, 64, 7), **conv("final", 64, 3, 7)}
    for i, (a, b) in enumerate([(64, 128), (128, 256), (256, 512)]):
        inpainting |= block(f"down_blocks.{i}", a, b)
    for i, (a, b) in enumerate([(512, 256), (512, 128), (256, 64)]):
        inpainting |= block(f"up_blocks.{i}", a, b)
    for i, c in enumerate([512, 512, 512, 512, 256, 256]):
        inpainting |= {**conv(f"resblock.{i}.conv1", c, c, 3), **conv(f"resblock.{i}.conv2", c, c, 3),
                       **norm(f"resblock.{i}.norm1", c), **norm(f"resblock.{i}.norm2", c)}

    avd: dict[str, tuple[int, ...]] = {}
    for name, sizes in (("id_encoder", [100, 256, 512, 1024, 128]), ("pose_encoder", [100, 256, 512, 1024, 128]),
                        ("decoder", [256, 1024, 512, 256, 100])):
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            avd |= linear(f"{name}.{3 * j}", a, b)
            if j < 3:
                avd |= batchnorm(f"{name}.{3 * j + 1}", b)
    return {"kp_detector": resnet("fg_encoder", 3, 100), "dense_motion_network": dense,
            "inpainting_network": inpainting, "bg_predictor": resnet("bg_encoder", 6, 6), "avd_network": avd}


def release_file(parts=tuple(RELEASE_PARAMETERS), seed: int = 0) -> dict:
    """A checkpoint in the release's layout with random weights of sane size, plus an epoch and optimiser states."""
    generator = torch.Generator().manual_seed(seed)
    kernel = AntiAliasInterpolation2d(3, 0.25).weight
    obj: dict = {"epoch": 99, "optimizer": {"state": {}, "param_groups": []}}
    for part in parts:
        state = {}
        for key, shape in release_layout()[part].items():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.tensor(7)
            elif key == "down.weight":
                state[key] = kernel.clone()
            elif key.endswith("running_var"):
                state[key] = torch.rand(shape, generator=generator) + 0.5
            elif key.endswith(".weight") and len(shape) == 1:  # norm scales
                state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
            elif key.endswith("fc.weight") and part == "bg_predictor":
                state[key] = 0.001 * torch.randn(shape, generator=generator)
            elif key.endswith("fc.bias") and part == "bg_predictor":
                state[key] = torch.tensor([1.0, 0, 0, 0, 1.0, 0]) + 0.01 * torch.randn(shape, generator=generator)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        obj[part] = state
        if part == "bg_predictor":
            obj["optimizer_bg_predictor"] = {"state": {}, "param_groups": []}
    return obj


def test_the_release_layout_has_the_references_counts() -> None:
    layout = release_layout()
    for part, shapes in layout.items():
        assert len(shapes) == RELEASE_ENTRIES[part], part
        learned = [s for k, s in shapes.items() if not k.endswith(("running_mean", "running_var",
                                                                     "num_batches_tracked", "down.weight"))]
        assert sum(int(np.prod(s)) for s in learned) == RELEASE_PARAMETERS[part], part


def test_parameter_counts_and_state_dict_layout_equal_the_release() -> None:
    from reenact.info import parameter_table

    rows = {name: count for name, _, count in parameter_table(["model=tpsmm", "paths.root_dir=/tmp"])}
    assert {k: rows[k] for k in RELEASE_PARAMETERS} == RELEASE_PARAMETERS
    network = instantiate(compose_model("tpsmm").network)
    for part, shapes in release_layout().items():
        ours = {k: tuple(v.shape) for k, v in getattr(network, part).state_dict().items()}
        assert ours == shapes, part


# ------------------------------------------------------------------------------------------- thin-plate splines
def test_the_five_control_points_map_exactly_without_regularisation() -> None:
    generator = torch.Generator().manual_seed(1)
    control = torch.rand(3, 4, 5, 2, generator=generator) * 2 - 1
    target = torch.rand(3, 4, 5, 2, generator=generator) * 2 - 1
    affine, weights = solve_tps(control, target, regularisation=0.0)
    mapped = torch.stack([warp_points(control[:, k], control[:, k:k + 1], affine[:, k:k + 1],
                                      weights[:, k:k + 1])[:, 0] for k in range(4)], dim=1)
    torch.testing.assert_close(mapped, target, atol=1e-4, rtol=0)


@pytest.mark.parametrize("regularisation,regulariser", [(0.0, "system"), (0.01, "kernel")])
def test_identical_points_give_the_identity_grid(regularisation: float, regulariser: str) -> None:
    points = torch.rand(2, 50, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    grids = tps_grids(points, points, (16, 16), 5, regularisation, regulariser)
    identity = make_coordinate_grid((16, 16)).expand_as(grids)
    torch.testing.assert_close(grids, identity, atol=1e-4, rtol=0)


def test_the_release_regulariser_is_added_to_the_whole_system() -> None:
    """0.01 I over the whole (N+3)^2 matrix, as the release: equal points no longer give the identity, and the
    solution is the float64 solve of that regularised system."""
    points = torch.rand(1, 1, 5, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    affine, weights = solve_tps(points, points, regularisation=0.01, regulariser="system")
    p = points[0, 0].double().numpy()
    squared = ((p[:, None] - p[None]) ** 2).sum(-1)
    kernel = squared * np.log(squared + 1e-9)
    homogeneous = np.concatenate([p, np.ones((5, 1))], 1)
    system = np.block([[kernel, homogeneous], [homogeneous.T, np.zeros((3, 3))]]) + 0.01 * np.eye(8)
    solution = np.linalg.solve(system, np.concatenate([p, np.zeros((3, 2))]))
    np.testing.assert_allclose(weights[0, 0].double().numpy(), solution[:5], atol=1e-4)
    np.testing.assert_allclose(affine[0, 0].double().numpy(), solution[5:].T, atol=1e-4)
    assert not np.allclose(solution[5:].T, np.eye(2, 3), atol=1e-3)


# ------------------------------------------------------------------------------------------- TPS dropout
@pytest.mark.parametrize("preset,expected", [
    ("tpsmm", {0: 0.1, 5: 0.25, 9: 0.3, 10: 0.3, 34: 0.3, 35: None, 99: None}),
    ("tpsmm_taichi", {0: 0.0, 5: 0.35, 10: 0.7, 34: 0.7, 35: None}),
    ("tpsmm_mgif", {0: 0.2, 2: 0.3, 10: 0.5, 35: None}),
])
def test_the_dropout_schedule_per_epoch(preset: str, expected: dict[int, float | None]) -> None:
    schedule = {k: compose_model(preset).network[k] for k in ("dropout_epochs", "dropout_start_p", "dropout_max_p",
                                                               "dropout_increase_epochs")}
    small = compose_model("tpsmm_small").network
    network = ThinPlateSplineMotionModel(
        *(instantiate(small[k]) for k in ("kp_detector", "dense_motion_network", "inpainting_network")), **schedule)
    for epoch, p in expected.items():
        network.set_progress(step=epoch * 10, epoch=epoch)
        got = network.dropout_probability()
        assert got is None if p is None else got == pytest.approx(p), epoch


@pytest.mark.parametrize("rescale", [False, True])
def test_dropout_keeps_the_background_and_the_quirk_leaves_the_kept_splines_unscaled(rescale: bool) -> None:
    dense = TPSDenseMotionNetwork(block_expansion=8, num_blocks=2, max_features=16, num_tps=4, scale_factor=0.5,
                                  num_occlusion_masks=2, dropout_rescale=rescale)
    logits = torch.randn(64, 5, 3, 3, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    maps = dense.contribution_maps(logits, dropout_p=0.5)
    torch.testing.assert_close(maps.sum(1), torch.ones(64, 3, 3), atol=1e-4, rtol=0)  # the partition's + 1e-6
    assert (maps[:, 0] > 0).all()  # the background is never dropped
    dropped = maps[:, 1:].amax(dim=(2, 3)) == 0  # (B, K)
    assert 0.3 < dropped.float().mean() < 0.7
    kept = ~torch.cat([torch.zeros(64, 1, dtype=torch.bool), dropped], 1)
    exponentials = (logits - logits.amax(1, keepdim=True)).exp() * kept[..., None, None]
    if rescale:  # the paper: kept splines' exponentials divided by (1 - p)
        exponentials[:, 1:] = exponentials[:, 1:] / 0.5
    torch.testing.assert_close(maps, exponentials / (exponentials.sum(1, keepdim=True) + 1e-6), atol=1e-6, rtol=1e-5)


def test_dropout_runs_in_training_only_and_stops_at_its_epoch(small_task) -> None:
    network = small_task.network
    source, driving = frames(2, 0), frames(2, 1)
    network.train()
    network.set_progress(0, network.dropout_increase_epochs)
    assert network.dropout_probability() == pytest.approx(0.3)
    torch.manual_seed(0)
    with torch.no_grad():
        first = network(source, driving)["contribution_maps"]
    assert (first[:, 1:].amax(dim=(2, 3)) == 0).any()  # a spline dropped (p = 0.3 over 2 x 10 draws)
    network.set_progress(0, network.dropout_epochs)
    with torch.no_grad():
        late = network(source, driving)["contribution_maps"]
    assert (late > 0).all()
    network.eval()
    with torch.no_grad():
        evaluated = network(source, driving)["contribution_maps"]
    assert (evaluated > 0).all()
