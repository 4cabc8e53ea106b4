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

from reenact.families.tpsmm.convert import convert_tpsmm_object
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
    from reenact.cli.info import parameter_table

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


@pytest.mark.parametrize("regularisation,regulariser", [(0.0, "system"), (0.01, "kernel"), (0.01, "displacement")])
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


# ------------------------------------------------------------------------------------------- loss terms
def test_the_background_loss_is_zero_at_the_identity_and_positive_otherwise(small_task) -> None:
    network = small_task.network.train()
    network.set_progress(0, network.bg_start)
    batch = {"source": frames(2, 0), "driving": frames(2, 1)}
    with torch.no_grad():
        output = network.training_forward(batch)
        # a fresh predictor gives the identity affine whatever the frames: A(s, d) A(d, s) = I
        assert torch.equal(output["bg_param"], torch.eye(3).expand(2, 3, 3))
        assert BackgroundLoss(10.0)(LossContext(network, batch, output))[""] == 0
        network.bg_predictor.bg_encoder.fc.weight.normal_(0, 0.01)
        output = network.training_forward(batch)
        assert BackgroundLoss(10.0)(LossContext(network, batch, output))[""] > 0
    network.set_progress(0, network.bg_start - 1)  # before bg_start: no background transform, no loss
    with torch.no_grad():
        output = network.training_forward(batch)
    assert output["bg_param"] is None
    assert BackgroundLoss(10.0)(LossContext(network, batch, output))[""] == 0


def test_the_warp_loss_gradient_reaches_only_the_motion_path() -> None:
    torch.manual_seed(0)
    network = build_task().network.train()
    network.set_progress(0, network.dropout_epochs)  # after dropout; the background is on
    network.bg_predictor.bg_encoder.fc.weight.data.normal_(0, 0.01)
    batch = {"source": frames(2, 0), "driving": frames(2, 1)}
    output = network.training_forward(batch)
    loss = WarpLoss(10.0)(LossContext(network, batch, output))[""]
    assert loss > 0
    loss.backward()

    def reached(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(network.kp_detector) and reached(network.dense_motion_network) and reached(network.bg_predictor)
    assert not reached(network.inpainting_network)
    assert not reached(network.avd_network)


# ------------------------------------------------------------------------------------------- transfer modes
def test_relative_motion_is_scaled_by_the_convex_hull_of_all_points(small_task) -> None:
    from scipy.spatial import ConvexHull

    network = small_task.network.eval()
    generator = torch.Generator().manual_seed(5)
    source = {"value": torch.rand(1, 50, 2, generator=generator) - 0.5}
    reference = {"value": (torch.rand(1, 50, 2, generator=generator) - 0.5) * 1.5}
    driving = {"value": reference["value"] + 0.05 * torch.randn(3, 50, 2, generator=generator)}
    moved = network.transfer(source, driving, reference, mode="relative")
    scale = (ConvexHull(source["value"][0].numpy()).volume / ConvexHull(reference["value"][0].numpy()).volume) ** 0.5
    expected = source["value"] + (driving["value"] - reference["value"]) * scale
    torch.testing.assert_close(moved["value"], expected, atol=1e-6, rtol=1e-5)
    assert network.transfer(source, driving, reference)["value"].equal(moved["value"])  # relative is the default
    assert network.transfer(source, driving, reference, mode="absolute")["value"].equal(driving["value"])


def test_avd_is_refused_in_one_line_until_trained_then_gives_the_networks_points(small_task) -> None:
    network = small_task.network.eval()
    generator = torch.Generator().manual_seed(6)
    source, driving = ({"value": torch.rand(n, 50, 2, generator=generator) - 0.5} for n in (1, 3))
    assert not network.avd_trained
    with pytest.raises(AVDUntrainedError) as info:
        network.transfer(source, driving, driving, mode="avd")
    assert "\n" not in str(info.value) and "experiment=tpsmm_avd" in str(info.value)
    network.avd_trained.fill_(True)
    try:
        with torch.no_grad():
            moved = network.transfer(source, driving, driving, mode="avd")["value"]
            expected = network.avd_network(source["value"].expand(3, -1, -1), driving["value"])
    finally:
        network.avd_trained.fill_(False)
    assert moved.shape == (3, 50, 2) and torch.equal(moved, expected)


def test_animation_renders_without_the_background_unless_asked(small_task) -> None:
    network = small_task.network.eval()
    network.bg_predictor.bg_encoder.fc.weight.data.normal_(0, 0.05)
    try:
        source, driving = frames(1, 0), frames(2, 1)
        with torch.no_grad():
            reconstruction = network(source.expand(2, -1, -1, -1), driving)
            motion_s, motion_d = network.encode_motion(source), network.encode_motion(driving)
            plain = network.render(source.expand(2, -1, -1, -1), motion_s, motion_d)
            network.animate_with_background = True
            with_frames = network.encode_motion(driving)
            animated = network.render(source.expand(2, -1, -1, -1), motion_s,
                                      network.transfer(motion_s, with_frames, with_frames, mode="absolute"))
        assert reconstruction["bg_param"] is not None
        assert not torch.allclose(plain["prediction"], reconstruction["prediction"])
        torch.testing.assert_close(animated["prediction"], reconstruction["prediction"], atol=1e-4, rtol=0)
    finally:
        network.animate_with_background = False
        torch.nn.init.zeros_(network.bg_predictor.bg_encoder.fc.weight)


# ------------------------------------------------------------------------------------------- the converter
RELEASE_FRAME = 128  # the release's networks at the smallest size their hourglass takes, to keep the test fast


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """(the release-layout file's contents, the converted checkpoint, the command's output)."""
    import contextlib
    import io

    from reenact.cli.convert import main

    root = tmp_path_factory.mktemp("tpsmm_release")
    contents = release_file()
    torch.save(contents, root / "vox.pth.tar")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["tpsmm", str(root / "vox.pth.tar"), str(root / "vox.ckpt"), "--frame-size", str(RELEASE_FRAME)])
    assert status == 0
    return contents, root / "vox.ckpt", printed.getvalue()


def test_the_converter_copies_every_network_and_drops_optimisers_and_epoch(converted) -> None:
    from reenact.api import load_pretrained

    contents, ckpt, printed = converted
    assert "optimiser states dropped" in printed and "saved at epoch 99" in printed
    assert "has no bg_predictor" not in printed and "has no avd_network" not in printed
    model = load_pretrained(ckpt)
    assert model.family == "tpsmm" and model.frame_size == RELEASE_FRAME
    state = model.network.state_dict()
    for part in RELEASE_PARAMETERS:
        for key, value in contents[part].items():
            assert torch.equal(state[f"{part}.{key}"], value.to(state[f"{part}.{key}"].dtype)), f"{part}.{key}"
    assert bool(model.network.avd_trained)


def test_a_converted_release_reconstructs_with_the_background(converted) -> None:
    from reenact.api import load_pretrained

    contents, ckpt, _ = converted
    model = load_pretrained(ckpt)
    source, driving = frames(2, 0, RELEASE_FRAME), frames(2, 1, RELEASE_FRAME)
    out = model.reconstruct(source, driving)
    assert out["prediction"].shape == (2, 3, RELEASE_FRAME, RELEASE_FRAME)
    assert torch.isfinite(out["prediction"]).all()
    assert out["motion_driving"]["value"].shape == (2, 50, 2)
    assert out["deformation"].shape == (2, RELEASE_FRAME // 4, RELEASE_FRAME // 4, 2)
    assert out["bg_param"] is not None and not torch.equal(out["bg_param"], torch.eye(3).expand(2, 3, 3))
    # the keypoints are the release detector's: sigmoid(resnet18(image)) * 2 - 1 with the file's weights
    detector = resnet18(weights=None)
    detector.fc = torch.nn.Linear(512, 100)
    detector.load_state_dict({k.removeprefix("fg_encoder."): v for k, v in contents["kp_detector"].items()})
    with torch.no_grad():
        expected = torch.sigmoid(detector.eval()(driving)) * 2 - 1
    torch.testing.assert_close(out["motion_driving"]["value"], expected.view(2, 50, 2), atol=1e-6, rtol=0)


def test_a_converted_release_starts_a_fine_tune(converted) -> None:
    contents, ckpt, _ = converted
    task = build_task("tpsmm", "~model.objective.terms.perceptual", f"model.init_from={ckpt}")
    from reenact.checkpoints import initialise_from

    initialise_from(task.network, task.discriminator, str(ckpt))
    for part in ("kp_detector", "inpainting_network", "avd_network"):
        for key, value in contents[part].items():
            assert torch.equal(task.network.state_dict()[f"{part}.{key}"], value.to(torch.float32)
                               if value.is_floating_point() else value)


def test_optional_networks_a_file_lacks_are_one_line_each() -> None:
    required = release_file(("kp_detector", "dense_motion_network", "inpainting_network"), seed=1)
    state, _, report = convert_tpsmm_object(required, "vox_demo.pth.tar")
    assert sum("has no bg_predictor" in note for note in report.notes) == 1
    assert sum("has no avd_network" in note for note in report.notes) == 1
    assert all("\n" not in note for note in report.notes)
    assert not bool(state["network.avd_trained"])
    # reenact's initial background predictor: the identity affine, i.e. the background transform is off
    assert torch.equal(state["network.bg_predictor.bg_encoder.fc.bias"], torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
    assert not state["network.bg_predictor.bg_encoder.fc.weight"].any()
    # mgif has no background predictor: nothing to report for it, and a file holding one does not fit
    _, _, report = convert_tpsmm_object(required, "mgif.pth.tar", preset="tpsmm_mgif")
    assert [n for n in report.notes if "has no" in n] == [n for n in report.notes if "has no avd_network" in n]
    with_bg = dict(required, bg_predictor=release_file(("bg_predictor",))["bg_predictor"])
    from reenact.convert.keymap import ConversionError

    with pytest.raises(ConversionError, match="unexpected") as info:
        convert_tpsmm_object(with_bg, "mgif.pth.tar", preset="tpsmm_mgif")
    assert "\n" not in str(info.value)


def test_a_file_of_another_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    from reenact.convert.keymap import ConversionError

    bad = release_file(("kp_detector", "dense_motion_network", "inpainting_network"), seed=2)
    bad["inpainting_network"]["final.weight"] = torch.zeros(3, 32, 7, 7)
    with pytest.raises(ConversionError, match="final.weight") as info:
        convert_tpsmm_object(bad, "bad.pth.tar")
    assert "\n" not in str(info.value)
    with pytest.raises(ConversionError, match="missing entries"):
        convert_tpsmm_object({"kp_detector": bad["kp_detector"]}, "half.pth.tar")
    with pytest.raises(ConversionError, match="not a TPSMM preset"):
        convert_tpsmm_object(bad, "bad.pth.tar", preset="fomm")


# ------------------------------------------------------------------------------------------- training, both stages
STAGE_COMMON = [
    "data.batch_size=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0",
    "callbacks.reconstruction_visualizer.every_n_epochs=100",
    "logger=none",
]


def stage_one_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the stage-1 networks: parameters and BatchNorm statistics (running means, variances, counts)."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()
            if not k.startswith("avd_network.") and k != "avd_trained"}


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    """(the stage-1 run folder, the data cache, parameter snapshots per group at the start and after the epoch) of a
    tiny tpsmm_small run through train.py's run(cfg)."""
    from reenact.cli.train import run
    from tests.helpers.configs import train_config
    from tests.test_staged_optimisation import ParameterSnapshots

    root, cache = tmp_path_factory.mktemp("tpsmm_stage1"), tmp_path_factory.mktemp("cache")
    _, objects = run(train_config(root, cache, [
        "model=tpsmm_small", *STAGE_COMMON, "trainer.max_epochs=1",
        "+callbacks.parameter_snapshots={_target_: tests.test_staged_optimisation.ParameterSnapshots}"]))
    assert objects["trainer"].global_step > 0
    snapshots = next(c for c in objects["trainer"].callbacks if isinstance(c, ParameterSnapshots)).snapshots
    return root, cache, snapshots


def test_stage_one_trains_the_motion_networks_and_leaves_the_avd_network(stage_one) -> None:
    """Epoch 0 of tpsmm_small: the kp detector, dense motion and inpainting networks train; the background predictor
    waits for bg_start (5) and the AVD network for stage 2, which the model records (transfer=avd refused)."""
    from reenact.api import load_pretrained

    root, _, (start, end) = stage_one

    def changed(name: str) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(start[name], end[name], strict=True))

    assert changed("kp_detector") and changed("dense_motion") and changed("inpainting")
    assert not changed("bg_predictor") and not changed("avd")
    trained = load_pretrained(root / "checkpoints" / "last.ckpt").network
    assert not bool(trained.avd_trained)
    points = {"value": torch.rand(1, 50, 2) - 0.5}
    with pytest.raises(AVDUntrainedError):
        trained.transfer(points, points, points, mode="avd")


def test_stage_two_trains_only_the_avd_network(stage_one, tmp_path: Path) -> None:
    """experiment=tpsmm_avd from the stage-1 run: the AVD loss falls, the AVD network changes, and every stage-1
    weight and BatchNorm statistic stays bit-identical; afterwards transfer=avd works."""
    from reenact.api import load_pretrained
    from reenact.cli.train import run
    from tests.helpers.configs import train_config

    root, cache, _ = stage_one
    before = load_pretrained(root / "checkpoints" / "last.ckpt").network
    _, objects = run(train_config(tmp_path, cache, [
        "experiment=tpsmm_avd", "model=tpsmm_small", f"model.init_from={root}", *STAGE_COMMON,
        "trainer.max_epochs=3", "trainer.limit_train_batches=3", "data.batch_size=4"]))
    after = objects["task"].network
    for key, value in stage_one_weights(before).items():
        assert torch.equal(value, after.state_dict()[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(before.avd_network.parameters(), after.avd_network.parameters(),
                                                       strict=True))
    assert bool(after.avd_trained)
    history = objects["trainer"].callback_metrics
    assert "train/avd_keypoints_epoch" in history
    source, driving = ({"value": torch.rand(n, 50, 2) - 0.5} for n in (1, 3))
    with torch.no_grad():
        moved = after.eval().transfer(source, driving, driving, mode="avd")["value"]
    assert moved.shape == (3, 50, 2) and torch.isfinite(moved).all()


def test_the_export_inverse_equals_torchs() -> None:
    from reenact.families.tpsmm.tps import gauss_jordan_inverse

    points = torch.rand(4, 10, 5, 2, generator=torch.Generator().manual_seed(7)) * 0.2 - 0.1  # clustered
    squared = ((points.unsqueeze(3) - points.unsqueeze(2)) ** 2).sum(-1)
    homogeneous = torch.cat([points, torch.ones(4, 10, 5, 1)], -1)
    system = torch.cat([torch.cat([squared * torch.log(squared + 1e-9), homogeneous], -1),
                        torch.cat([homogeneous.transpose(-1, -2), torch.zeros(4, 10, 3, 3)], -1)], -2)
    system = system + 0.01 * torch.eye(8)
    torch.testing.assert_close(gauss_jordan_inverse(system.double()), torch.linalg.inv(system.double()),
                               atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gauss_jordan_inverse(system) @ system, torch.eye(8).expand_as(system), atol=1e-4,
                               rtol=0)


def test_a_converted_release_animates_by_each_transfer_mode(converted) -> None:
    from reenact.api import load_pretrained

    _, ckpt, _ = converted
    model = load_pretrained(ckpt)
    source, driving = frames(1, 2, RELEASE_FRAME)[0], frames(3, 3, RELEASE_FRAME)
    clips = {mode: model.animate(source, driving, transfer=mode, batch_size=3) for mode in ("relative", "absolute",
                                                                                             "avd")}
    for clip in clips.values():
        assert clip.shape == (3, 3, RELEASE_FRAME, RELEASE_FRAME) and torch.isfinite(clip).all()
    assert not torch.allclose(clips["avd"], clips["absolute"])
    assert torch.equal(model.animate(source, driving, batch_size=3), clips["relative"])  # relative is the default


def test_two_process_ddp_runs_through_the_epoch_where_the_background_starts(tmp_path: Path) -> None:
    """gloo DDP on 2 CPU processes, epochs 0 and 1 with bg_start=1: the background predictor (and the AVD network,
    frozen in stage 1) get no gradient in some steps, which the declared may_skip_parameters lets DDP accept."""
    import json

    from tests.helpers.configs import CHEAP_RUN
    from tests.test_train import _cli

    result = _cli(["model=tpsmm_small", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "model.network.bg_start=1", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}", *CHEAP_RUN, "trainer.max_epochs=2",
                   "trainer.limit_train_batches=1", "trainer.check_val_every_n_epoch=2",
                   "callbacks.reconstruction_visualizer.log_video=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/l1" in json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    logged = "".join(path.read_text() for path in (tmp_path / "run").rglob("metrics.csv"))
    assert "train/background" in logged and "train/warp" in logged
