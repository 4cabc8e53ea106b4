"""Learned correlation warping (the seed's module D): the correlation volume, the search-window loss, the iterative
refiner, the keypoint-free ``correlation`` family, correlation refinement of FOMM and ``python -m reenact.warp``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn

from reenact.families.base import TransferModeError
from reenact.families.correlation.feature_encoder import FeatureEncoder
from reenact.families.correlation.refiner import CorrelationRefiner
from reenact.families.correlation.volume import correlation_volume, l2_normalise, search_window_loss
from reenact.families.correlation.warp_network import CorrelationWarpNetwork
from reenact.layers.geometry import make_coordinate_grid
from reenact.losses.terms import LossContext
from reenact.utils.hydra_utils import compose_config, to_plain

FRAME = 64


def compose_model(preset: str, *overrides: str):
    cfg = compose_config("train", [f"model={preset}", *overrides, "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    with open_dict(cfg.model):
        for term in (cfg.model.objective.terms or {}).values():
            if term is not None and "vgg_pretrained" in term:
                term.vgg_pretrained = False
    return cfg.model


def build_task(preset: str, *overrides: str):
    model = compose_model(preset, *overrides)
    return instantiate(model, _partial_=True)(model_config=to_plain(model), data_config={"frame_size": FRAME})


def frames(batch: int = 2, seed: int = 0, size: int = FRAME) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def small_refiner(iterations: int = 3, size: int = 32) -> CorrelationRefiner:
    downs = int(math.log2(size // 8))
    return CorrelationRefiner(FeatureEncoder(block_expansion=8, max_features=16, num_down_blocks=downs,
                                             out_channels=8, grid_size=8),
                              CorrelationWarpNetwork(grid_size=8, hidden=16, num_layers=1), iterations=iterations)


# ------------------------------------------------------------------------------------------- correlation and loss
def test_correlation_volume_is_the_seeds_formula_on_hand_made_fields() -> None:
    fc = torch.tensor([[[1.0, 0.0], [0.6, 0.0]], [[0.0, 1.0], [0.8, -1.0]]]).unsqueeze(0)  # (1, 2, 2, 2)
    fg = torch.tensor([[[0.0, 1.0], [0.28, -0.6]], [[1.0, 0.0], [0.96, 0.8]]]).unsqueeze(0)
    m = correlation_volume(fc, fg)
    assert m.shape == (1, 2, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            dots = {(k, lc): float(fc[0, :, i, j] @ fg[0, :, k, lc]) for k in range(2) for lc in range(2)}
            norm = math.sqrt(sum(d * d for d in dots.values()))
            for (k, lc), dot in dots.items():
                assert m[0, i, j, k, lc].item() == pytest.approx(dot / norm, abs=1e-6)
    # the seed's normalisation: unit root sum of squares over the target positions, for every source position
    torch.testing.assert_close(m.pow(2).sum(dim=(3, 4)), torch.ones(1, 2, 2))


def test_l2_normalise_gives_unit_vectors_per_position() -> None:
    features = l2_normalise(torch.randn(2, 5, 3, 4))
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2, 3, 4))


def test_search_window_loss_equals_a_hand_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    warped = l2_normalise(torch.randn(2, 4, 3, 4, generator=generator))
    target = l2_normalise(torch.randn(2, 4, 3, 4, generator=generator))
    window, temperature = 3, 0.5
    m = correlation_volume(warped, target)  # checked above against the formula
    terms = []
    for b in range(2):
        for i in range(3):
            for j in range(4):
                candidates = [(k, lc) for k in range(i - 1, i + 2) for lc in range(j - 1, j + 2)
                              if 0 <= k < 3 and 0 <= lc < 4]  # the window, inside the field
                denominator = sum(math.exp(m[b, i, j, k, lc].item() / temperature) for k, lc in candidates)
                terms.append(-math.log(math.exp(m[b, i, j, i, j].item() / temperature) / denominator))
    expected = sum(terms) / len(terms)
    assert search_window_loss(warped, target, window, temperature).item() == pytest.approx(expected, rel=1e-5)
    # aligned fields score better than misaligned ones
    assert search_window_loss(target, target, 9) < search_window_loss(warped, target, 9)


def test_search_window_must_be_odd() -> None:
    features = l2_normalise(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        search_window_loss(features, features, window=4)


# ------------------------------------------------------------------------------------------- the refiner
def test_a_zero_initialised_increment_gives_the_identity_warp() -> None:
    torch.manual_seed(0)
    refiner = small_refiner()
    source, target = frames(2, 1, 32), frames(2, 2, 32)
    with torch.no_grad():
        out = refiner(source, refiner.encode(target))
    identity = make_coordinate_grid((32, 32)).expand(2, 32, 32, 2)
    torch.testing.assert_close(out["deformation"], identity, atol=1e-6, rtol=0)
    # a given w_0 is returned unchanged
    initial = identity + 0.05 * torch.randn(2, 32, 32, 2)
    with torch.no_grad():
        moved = refiner(source, refiner.encode(target), initial=initial)
    torch.testing.assert_close(moved["deformation"], initial, atol=1e-6, rtol=0)


def test_every_iteration_re_extracts_features_and_passes_gradients() -> None:
    torch.manual_seed(0)
    iterations = 3
    refiner = small_refiner(iterations)
    for layer in (refiner.warp_network.head, refiner.warp_network.mix):  # a trained f: non-zero increments
        nn.init.normal_(layer.weight, std=0.05)
    extracted: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen.append(inputs[0])
        output.retain_grad()
        extracted.append(output)

    source = frames(2, 3, 32).requires_grad_(True)
    target_features = refiner.encode(frames(2, 4, 32)).detach()
    source_features = refiner.encode(source)
    handle = refiner.extractor.register_forward_hook(keep)
    increments: list[torch.Tensor] = []

    def keep_increment(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        output.retain_grad()
        increments.append(output)

    f_handle = refiner.warp_network.register_forward_hook(keep_increment)
    out = refiner(source, target_features, source_features=source_features)
    handle.remove()
    f_handle.remove()
    assert len(extracted) == iterations  # one re-extraction per iteration (the first reuses the source's field)
    assert len(increments) == iterations
    assert out["warped_features"] is extracted[-1]
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert not torch.equal(earlier, later), "each iteration extracts from the source warped anew"
    loss = search_window_loss(out["warped_features"], out["target_features"], 5) + out["deformation"].square().mean()
    loss.backward()
    for index, (features, increment) in enumerate(zip(extracted, increments, strict=True)):
        assert features.grad is not None and features.grad.abs().sum() > 0, f"iteration {index}: no gradient"
        assert increment.grad is not None and increment.grad.abs().sum() > 0, f"iteration {index}: no gradient"
    assert source.grad is not None and source.grad.abs().sum() > 0
    assert all(p.grad is not None for p in refiner.warp_network.parameters())


def test_the_warp_network_refuses_another_field_size() -> None:
    network = CorrelationWarpNetwork(grid_size=8, hidden=8, num_layers=1)
    with pytest.raises(ValueError, match="8x8"):
        network(torch.zeros(1, 4, 4, 4, 4))


def test_the_matching_path_only_looks_inside_its_window() -> None:
    """Each target cell's soft-argmax runs over the source cells of its match_window x match_window window: a
    stronger correlation farther away (the flat regions of real frames) cannot pull the match to it."""
    g = 8
    volume = torch.zeros(1, g, g, g, g)
    volume[0, 3, 5, 3, 4] = 1.0  # target (3, 4) matches source (3, 5): one cell to the right, inside a 5x5 window
    volume[0, 7, 0, 3, 4] = 5.0  # and, more strongly, a source cell four cells away
    cell = 2.0 / (g - 1)
    windowed = CorrelationWarpNetwork(grid_size=g, hidden=8, num_layers=1, sharpness=30.0, match_window=5,
                                      match_init=True)
    global_ = CorrelationWarpNetwork(grid_size=g, hidden=8, num_layers=1, sharpness=30.0, match_window=None,
                                     match_init=True)
    with torch.no_grad():
        near, far = windowed(volume)[0, :, 3, 4], global_(volume)[0, :, 3, 4]  # (x, y) increments
    torch.testing.assert_close(near, torch.tensor([cell, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(far, torch.tensor([-4 * cell, 4 * cell]), atol=1e-4, rtol=0)
    # match_init passes the match through; the default (zero) f is the identity warp whatever the window
    torch.testing.assert_close(CorrelationWarpNetwork(grid_size=g, hidden=8, num_layers=1)(volume),
                               torch.zeros(1, 2, g, g))


def test_the_matching_paths_smoothing_is_a_normalised_gaussian() -> None:
    network = CorrelationWarpNetwork(grid_size=16, hidden=8, num_layers=1, smoothing=1.5)
    constant = torch.full((2, 2, 16, 16), 0.3)
    torch.testing.assert_close(network.smooth(constant), constant)  # a uniform displacement is unchanged
    spike = torch.zeros(1, 2, 16, 16)
    spike[0, :, 8, 8] = 1.0  # far enough from the border (> 4.5 sigma) to keep its mass
    spread = network.smooth(spike)
    assert spread[0, 0, 8, 8] < 0.2 and spread[0, 0, 8, 9] > 0 and spread[0, 0].sum() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="odd"):
        CorrelationWarpNetwork(grid_size=8, match_window=4)


# ------------------------------------------------------------------------------------------- the family
@pytest.fixture(scope="module")
def correlation_task():
    torch.manual_seed(0)
    return build_task("correlation_small")


class PooledFeatures(nn.Module):
    """A feature field blind to zero-mean detail inside each 4x4 block (average pool first, then linear)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.project = nn.Conv2d(3, channels, kernel_size=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.project(F.avg_pool2d(frames, 4)))


def test_the_prediction_sees_the_driving_frame_only_through_its_feature_field() -> None:
    torch.manual_seed(0)
    task = build_task("correlation_small")
    task.network.refiner.extractor = PooledFeatures()  # 64x64 frames -> 16x16 fields, as the preset's encoder
    network = task.network.eval()
    for layer in (network.refiner.warp_network.head, network.refiner.warp_network.mix):
        nn.init.normal_(layer.weight, std=0.05)  # the field moves: the check is not about the identity
    source, driving = frames(2, 5), frames(2, 6)
    checker = (torch.arange(FRAME).view(-1, 1) + torch.arange(FRAME).view(1, -1)) % 2 * 2 - 1.0  # ±1
    other = driving + 0.2 * checker  # another frame: zero-mean detail within every 4x4 block
    assert (other - driving).abs().mean() > 0.1
    with torch.no_grad():
        torch.testing.assert_close(network.encode_motion(other)["features"],
                                   network.encode_motion(driving)["features"], atol=1e-6, rtol=0)
        first, second = network(source, driving), network(source, other)
    assert not torch.allclose(first["deformation"], make_coordinate_grid((FRAME, FRAME)).expand_as(
        first["deformation"]), atol=1e-3)
    # equal up to float rounding (the pooled checkerboard is zero to ~1e-8)
    torch.testing.assert_close(second["prediction"], first["prediction"], atol=1e-4, rtol=0)
    torch.testing.assert_close(second["deformation"], first["deformation"], atol=1e-4, rtol=0)


def test_the_family_has_no_keypoints_and_no_relative_motion(correlation_task) -> None:
    network = correlation_task.network.eval()
    source = frames(1, 7)
    with torch.no_grad():
        motion = network.compact_motion(network.encode_motion(source))
    assert set(motion) == {"features"} and network.keypoints_2d(motion) is None
    assert network.transfer_modes == ("absolute",)
    with pytest.raises(TransferModeError) as error:  # the one mechanism every caller (CLI, API, export) goes through
        network.transfer(motion, motion, motion, "relative")
    assert "transfers motion by absolute" in str(error.value) and "\n" not in str(error.value)
    assert network.transfer(motion, motion, motion) is motion  # the default mode: absolute


def test_one_training_step_trains_every_part(correlation_task) -> None:
    network, objective = correlation_task.network.train(), correlation_task.objective
    assert set(objective.terms) >= {"reconstruction_l1", "search_window"}
    batch = {"source": frames(2, 8), "driving": frames(2, 9)}
    output = network.training_forward(batch)
    losses = objective(LossContext(network, batch, output))
    assert all(torch.isfinite(v) for v in losses.values())
    network.zero_grad()
    sum(losses.values()).backward()
    for name, module in network.parameter_report():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


# ------------------------------------------------------------------------------------------- FOMM refinement
def test_fomm_without_the_switch_is_unchanged() -> None:
    plain = instantiate(compose_model("fomm").network)
    explicit = instantiate(compose_model("fomm", "model/refinement=none").network)
    assert plain.refinement is None and explicit.refinement is None
    assert list(plain.state_dict()) == list(explicit.state_dict())
    assert all(not key.startswith("refinement") for key in plain.state_dict())


def test_fomm_with_correlation_refinement_starts_from_its_own_flow() -> None:
    torch.manual_seed(0)
    task = build_task("fomm", "model/refinement=correlation")
    network = task.network.eval()
    assert network.refinement is not None and "search_window" in task.objective.terms
    source, driving = frames(2, 10), frames(2, 11)
    with torch.no_grad():
        out = network(source, driving)
        motion_s, motion_d = out["motion_source"], out["motion_driving"]
        unrefined = network.generator(source, kp_driving=motion_d, kp_source=motion_s)
    assert out["warped_features"] is not None and out["target_features"] is not None
    # an untrained f adds nothing: the refined flow is the dense motion's flow w_0
    torch.testing.assert_close(out["deformation"], unrefined["deformation"], atol=1e-6, rtol=0)
    compact = network.compact_motion(motion_d)
    assert "features" in compact
    assert "features" in network.transfer(motion_s, compact, compact, "absolute")
    reference = {k: v[:1] for k, v in compact.items()}
    source_motion = {k: v[:1] for k, v in network.compact_motion(motion_s).items()}
    assert "features" not in network.transfer(source_motion, compact, reference, "relative")
    network.train()
    batch = {"source": source, "driving": driving}
    output = network.training_forward(batch)
    total = sum(task.objective(LossContext(network, batch, output)).values())
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.refinement.parameters())
    groups = network.optimizer_groups()
    assert {id(p) for p in network.refinement.parameters()} <= {id(p) for p in groups["generator"]}


# ------------------------------------------------------------------------------------------- python -m reenact.warp
def test_warp_entry_point_writes_the_warped_image_and_the_flow(correlation_task, tmp_path: Path) -> None:
    from PIL import Image

    from reenact.cli.warp import run

    checkpoint = {"state_dict": correlation_task.state_dict()}
    correlation_task.on_save_checkpoint(checkpoint)
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)
    content, geometry = tmp_path / "a.png", tmp_path / "b.png"
    for image, seed in ((content, 12), (geometry, 13)):
        array = frames(1, seed, 80)[0].permute(1, 2, 0).mul(255).byte().numpy()
        Image.fromarray(array).save(image)
    cfg = compose_config("warp", [f"ckpt_path={path}", f"content={content}", f"geometry={geometry}",
                                  f"output={tmp_path / 'out' / 'warped.png'}", "device=cpu",
                                  f"paths.output_dir={tmp_path}"])
    result = run(cfg)
    with Image.open(result["output"]) as warped, Image.open(result["flow"]) as flow:
        assert warped.size == (80, 80) and flow.size == (80, 80)  # the content image's resolution
    assert result["flow"] == tmp_path / "out" / "warped_flow.png"

    from reenact.cli.warp import WarpInputError

    missing = compose_config("warp", [f"ckpt_path={path}", f"content={tmp_path / 'nope.png'}",
                                      f"geometry={geometry}", f"output={tmp_path / 'x.png'}",
                                      f"paths.output_dir={tmp_path}"])
    with pytest.raises(WarpInputError, match="content image not found"):
        run(missing)


def test_the_blend_takes_visible_pixels_from_the_warped_source() -> None:
    from reenact.families.correlation.generator import WarpingGenerator
    from reenact.layers.geometry import warp

    torch.manual_seed(0)
    generator = WarpingGenerator(block_expansion=8, max_features=16, num_down_blocks=2, num_bottleneck_blocks=1,
                                 blend_warped_source=True, blend_init_bias=30.0).eval()
    nn.init.zeros_(generator.blend.head.weight)  # a constant mask of sigmoid(30): the warped source alone
    source = torch.rand(2, 3, 32, 32)
    deformation = make_coordinate_grid((8, 8)).expand(2, 8, 8, 2) * 0.8  # a zoom, at the field's size
    with torch.no_grad():
        prediction = generator(source, deformation, None)
    torch.testing.assert_close(prediction, warp(source, deformation), atol=1e-6, rtol=0)


def test_the_one_step_refinement_refines_fomm_once_and_trains_by_reconstruction_alone() -> None:
    """`model/refinement=correlation_one_step`: K = 1 refinement step, no search-window term; the flow it renders
    differs from the unrefined dense motion once the increment is non-zero."""
    task = build_task("fomm", "model/refinement=correlation_one_step")
    assert task.network.refinement.iterations == 1
    assert "search_window" not in task.objective.terms and "reconstruction_l1" in task.objective.terms
    with torch.no_grad():
        task.network.refinement.warp_network.head.bias.fill_(0.1)  # a non-zero increment of 0.1 feature cells
    source, driving = torch.rand(1, 3, FRAME, FRAME), torch.rand(1, 3, FRAME, FRAME)
    motion_source, motion_driving = task.network.encode_motion(source), task.network.encode_motion(driving)
    refined = task.network.render(source, motion_source, motion_driving)["deformation"]
    unrefined = task.network.generator(source, kp_driving=motion_driving, kp_source=motion_source)["deformation"]
    shift = (refined - unrefined).mean(dim=(0, 1, 2))  # (2,)
    cell = 2.0 / (task.network.refinement.warp_network.grid_size - 1)
    torch.testing.assert_close(shift, torch.full((2,), 0.1 * cell), atol=1e-5, rtol=0)
