"""FOMM networks: keypoints, identity motion, exact reference sizes, D, gradients, animation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reenact.families.fomm.dense_motion import DenseMotionNetwork, inverse_2x2
from reenact.families.fomm.generator import OcclusionAwareGenerator
from reenact.families.fomm.keypoint_detector import KPDetector
from reenact.families.fomm.model import FirstOrderMotionModel
from reenact.families.fomm.relative_motion import normalize_kp
from reenact.layers.discriminator import Discriminator, MultiScaleDiscriminator
from reenact.layers.geometry import make_coordinate_grid, warp_and_mask
from tests.helpers.fitting import final_l1_after_fitting

K = 10
SIZE = 64


def small_kp_detector(**overrides: object) -> KPDetector:
    args = dict(num_kp=K, block_expansion=16, max_features=128, num_blocks=3, scale_factor=0.5)
    args.update(overrides)
    return KPDetector(**args)


def small_dense_motion(**overrides: object) -> DenseMotionNetwork:
    args = dict(block_expansion=16, num_blocks=3, max_features=128, num_kp=K, scale_factor=0.5)
    args.update(overrides)
    return DenseMotionNetwork(**args)


def small_generator() -> OcclusionAwareGenerator:
    return OcclusionAwareGenerator(
        num_kp=K,
        block_expansion=16,
        max_features=128,
        num_down_blocks=2,
        num_bottleneck_blocks=2,
        dense_motion=small_dense_motion(),
    )


def small_model() -> FirstOrderMotionModel:
    return FirstOrderMotionModel(small_kp_detector(), small_generator())


def random_kp(batch: int, jacobian: bool = True) -> dict[str, torch.Tensor]:
    kp = {"value": torch.rand(batch, K, 2) * 1.6 - 0.8}
    if jacobian:  # identity plus a perturbation keeps them well conditioned
        kp["jacobian"] = torch.eye(2) + 0.3 * torch.randn(batch, K, 2, 2)
    return kp


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FixedLogits(nn.Module):
    """Stands in for the heatmap head so the detector's soft-argmax sees a known map."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(features.shape[0], -1, -1, -1)


def test_soft_argmax_returns_the_heatmap_peak() -> None:
    detector = small_kp_detector(scale_factor=1.0).eval()
    heat = 58  # 7x7 head with padding 0 on a 64x64 feature map
    peaks = [(5, 40), (29, 29), (57, 0), (10, 50), (0, 57), (33, 3), (20, 44), (44, 20), (1, 1), (50, 12)]
    logits = torch.zeros(1, K, heat, heat)
    for k, (row, col) in enumerate(peaks):
        logits[0, k, row, col] = 5.0  # with temperature 0.1 the peak holds all but e^-50 of the mass
    detector.kp = FixedLogits(logits)
    out = detector(torch.rand(2, 3, SIZE, SIZE))
    expected = torch.tensor([[-1 + 2 * col / (heat - 1), -1 + 2 * row / (heat - 1)] for row, col in peaks])
    assert out["heatmap"].shape == (2, K, heat, heat)
    torch.testing.assert_close(out["value"], expected.expand(2, -1, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("single_jacobian_map", [False, True])
def test_jacobians_are_identity_at_initialisation(single_jacobian_map: bool) -> None:
    detector = small_kp_detector(single_jacobian_map=single_jacobian_map)
    out = detector(torch.rand(2, 3, SIZE, SIZE))
    assert out["value"].shape == (2, K, 2) and out["jacobian"].shape == (2, K, 2, 2)
    torch.testing.assert_close(out["jacobian"], torch.eye(2).expand(2, K, 2, 2), atol=1e-5, rtol=0)
    assert "jacobian" not in small_kp_detector(estimate_jacobian=False)(torch.rand(1, 3, SIZE, SIZE))


def test_sparse_motions_follow_the_first_order_formula() -> None:
    dense_motion = small_dense_motion()
    kp_source, kp_driving = random_kp(2), random_kp(2)
    motions = dense_motion.create_sparse_motions((16, 16), kp_driving, kp_source)  # (B, K+1, h, w, 2)
    grid = make_coordinate_grid((16, 16))
    torch.testing.assert_close(motions[:, 0], grid.expand(2, 16, 16, 2))  # background part is the identity
    k, z = 3, grid[5, 7]  # one keypoint, one pixel
    jacobian = kp_source["jacobian"][:, k] @ torch.linalg.inv(kp_driving["jacobian"][:, k])  # (B, 2, 2)
    expected = kp_source["value"][:, k] + (jacobian @ (z - kp_driving["value"][:, k]).unsqueeze(-1)).squeeze(
        -1
    )
    torch.testing.assert_close(motions[:, k + 1, 5, 7], expected, atol=1e-5, rtol=0)
    # zero-order motion without Jacobians: a pure translation by kp_s - kp_d
    no_jac = dense_motion.create_sparse_motions(
        (16, 16), {"value": kp_driving["value"]}, {"value": kp_source["value"]}
    )
    torch.testing.assert_close(
        no_jac[:, k + 1, 5, 7], z + kp_source["value"][:, k] - kp_driving["value"][:, k]
    )


def test_equal_keypoints_give_the_identity_deformation_and_deformed_equals_source() -> None:
    generator = small_generator()  # dense motion at 32x32, resized to the 64x64 image for `deformed`
    source = torch.rand(2, 3, SIZE, SIZE)
    kp = random_kp(2)
    out = generator(source, kp_driving=kp, kp_source=kp)
    assert out["mask"].std() > 0  # random weights: the masks really mix the parts
    identity = make_coordinate_grid((32, 32)).expand(2, 32, 32, 2)
    assert (out["deformation"] - identity).abs().max() < 1e-5
    # a sampling-grid error e moves a noise image by up to e * SIZE / 2 per pixel: 1e-5 in the grid, ~3e-4 here
    assert (out["deformed"] - source).abs().max() < 1e-4
    # and moving the keypoints does move the flow
    moved = generator(source, kp_driving=random_kp(2), kp_source=kp)
    assert (moved["deformation"] - identity).abs().max() > 1e-2


def test_fomm_output_shapes_at_64() -> None:
    model = small_model()
    source, driving = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    out = model(source, driving)
    assert out["prediction"].shape == (2, 3, SIZE, SIZE)
    assert 0 <= out["prediction"].min() and out["prediction"].max() <= 1
    assert out["deformed"].shape == (2, 3, SIZE, SIZE)
    assert out["deformation"].shape == (2, 32, 32, 2)
    assert out["occlusion_map"].shape == (2, 1, 32, 32)
    assert out["mask"].shape == (2, K + 1, 32, 32)
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(2, 32, 32))
    assert out["sparse_deformed"].shape == (2, K + 1, 3, 32, 32)
    for name in ("motion_source", "motion_driving"):
        assert out[name]["value"].shape == (2, K, 2) and out[name]["jacobian"].shape == (2, K, 2, 2)
    assert model.keypoints_2d(out["motion_source"]).shape == (2, K, 2)
    assert model.family == "fomm"
    groups = model.optimizer_groups()
    assert set(groups) == {"kp_detector", "generator"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == num_params(model)
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.rand(1, 3, 36, 36), torch.rand(1, 3, 36, 36))


def test_vox256_parameter_counts_are_exact() -> None:
    detector = KPDetector(
        num_kp=10,
        block_expansion=32,
        max_features=1024,
        num_blocks=5,
        temperature=0.1,
        estimate_jacobian=True,
        scale_factor=0.25,
    )
    dense_motion = DenseMotionNetwork(
        block_expansion=64, max_features=1024, num_blocks=5, scale_factor=0.25, num_kp=10
    )
    generator = OcclusionAwareGenerator(
        block_expansion=64,
        max_features=512,
        num_down_blocks=2,
        num_bottleneck_blocks=6,
        estimate_occlusion_map=True,
        dense_motion=dense_motion,
    )
    discriminator = MultiScaleDiscriminator(
        scales=[1], block_expansion=32, max_features=512, num_blocks=4, sn=True, use_kp=False
    )
    assert num_params(detector) == 14_215_368
    assert num_params(dense_motion) == 37_730_268
    assert num_params(generator) == 45_575_391
    assert num_params(discriminator) == 2_758_849


def test_discriminator_with_keypoints_and_spectral_norm() -> None:
    disc = MultiScaleDiscriminator(
        scales=[1.0, 0.5], block_expansion=8, max_features=64, num_blocks=3, sn=True, use_kp=True, num_kp=K
    )
    image = torch.rand(2, 3, SIZE, SIZE)
    kp = random_kp(2)["value"].requires_grad_()
    outputs = disc(image, kp)
    assert len(outputs) == 2
    (features, prediction), (features_half, prediction_half) = outputs
    assert [f.shape[1] for f in features] == [16, 32, 64]
    assert prediction.shape == (2, 1, 10, 10)  # 64 -> 61 -> 30 -> 27 -> 13 -> 10 (no pool after the last)
    assert prediction_half.shape == (2, 1, 2, 2)  # 32 -> 29 -> 14 -> 11 -> 5 -> 2
    # the keypoints condition D: other keypoints, other prediction; but they get no gradient from D
    other = disc(image, random_kp(2)["value"])[0][1]
    assert (other - prediction).abs().max() > 0
    prediction.sum().backward()
    assert kp.grad is None
    with pytest.raises(ValueError, match="kp_value"):
        disc(image, None)
    # spectral norm: after power iterations in training mode the effective weight has unit spectral norm
    single = Discriminator(block_expansion=8, max_features=64, sn=True)
    conv = single.down_blocks[1].conv
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(10.0)  # far from unit norm before normalisation
    for _ in range(20):
        single(image)
    raw_norm = torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), ord=2).item()
    assert raw_norm > 3
    assert abs(torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item() - 1.0) < 0.05
    plain = Discriminator(block_expansion=8, max_features=64, sn=False)
    assert num_params(plain) == num_params(single)


def test_gradients_reach_detector_and_generator_and_loss_falls() -> None:
    model = small_model()
    # a smooth source and a shifted copy as driving: learnable, unlike independent noise
    source = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(SIZE, SIZE), mode="bilinear")
    driving = torch.roll(source, shifts=4, dims=-1)
    loss = (model(source, driving)["prediction"] - driving).abs().mean()
    loss.backward()
    for group, params in model.optimizer_groups().items():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), group
        assert sum(p.grad.abs().sum() for p in params) > 0, group
    detector = model.kp_detector
    assert detector.kp.weight.grad.abs().sum() > 0  # through the keypoint positions
    assert detector.jacobian.weight.grad.abs().sum() > 0  # through the first-order motions
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = (model(source, driving)["prediction"] - driving).abs().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0]  # BatchNorm at batch 2 makes single steps noisy


def test_keypoints_and_motions_stay_float32_under_autocast() -> None:
    jac = torch.eye(2) + 0.3 * torch.randn(4, K, 2, 2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inv = inverse_2x2(jac.bfloat16())
        motions = small_dense_motion().create_sparse_motions((8, 8), random_kp(1), random_kp(1))
        kp = small_kp_detector()(torch.rand(2, 3, SIZE, SIZE))
    assert inv.dtype == torch.float32 and motions.dtype == torch.float32
    assert kp["value"].dtype == torch.float32 and kp["jacobian"].dtype == torch.float32
    torch.testing.assert_close(inverse_2x2(jac), torch.linalg.inv(jac), atol=1e-5, rtol=1e-5)


def test_normalize_kp_relative_motion() -> None:
    kp_source, kp_driving = random_kp(2), random_kp(2)
    same = normalize_kp(
        kp_source,
        kp_driving,
        kp_driving,
        adapt_movement_scale=True,
        use_relative_movement=True,
        use_relative_jacobian=True,
    )
    torch.testing.assert_close(same["value"], kp_source["value"], atol=0, rtol=0)
    torch.testing.assert_close(same["jacobian"], kp_source["jacobian"], atol=1e-5, rtol=1e-5)
    # movement is copied; with adapt_movement_scale it scales by sqrt(hull area ratio) = 2 here
    initial = {"value": kp_source["value"] / 2, "jacobian": kp_driving["jacobian"]}
    shifted = {"value": initial["value"] + 0.1, "jacobian": kp_driving["jacobian"]}
    plain = normalize_kp(kp_source, shifted, initial, False, True, True)
    scaled = normalize_kp(kp_source, shifted, initial, True, True, True)
    torch.testing.assert_close(plain["value"], kp_source["value"] + 0.1)
    torch.testing.assert_close(scaled["value"], kp_source["value"] + 0.2)
    absolute = normalize_kp(kp_source, kp_driving, initial, False, False, True)
    assert absolute["value"] is kp_driving["value"] and absolute["jacobian"] is kp_driving["jacobian"]
    with pytest.raises(ValueError, match="degenerate"):
        line = {"value": torch.linspace(-1, 1, K).view(1, K, 1).expand(1, K, 2).contiguous()}
        normalize_kp({"value": kp_source["value"][:1]}, line, line, True, True, False)


def test_warped_skips_add_no_parameters_and_carry_detail_the_bottleneck_blurs() -> None:
    def generator(warped_skips: bool) -> OcclusionAwareGenerator:
        torch.manual_seed(0)
        return OcclusionAwareGenerator(num_kp=K, block_expansion=8, max_features=16, num_down_blocks=2,
                                       num_bottleneck_blocks=1, estimate_occlusion_map=False,
                                       dense_motion=None, warped_skips=warped_skips)

    plain, skips = generator(False), generator(True)
    assert num_params(plain) == num_params(skips)
    images = torch.rand(4, 3, 32, 32)  # pixel noise: only a path at full resolution can reproduce it
    kp = random_kp(4)
    errors = {name: final_l1_after_fitting(lambda net=net: net(images, kp, kp)["prediction"], images,
                                           net.parameters(), steps=60)
              for name, net in (("plain", plain), ("skips", skips))}
    assert errors["skips"] < 0.6 * errors["plain"], errors


def test_warped_skips_move_with_the_flow() -> None:
    torch.manual_seed(0)
    net = OcclusionAwareGenerator(num_kp=K, block_expansion=8, max_features=16, num_down_blocks=1,
                                  num_bottleneck_blocks=1, dense_motion=small_dense_motion(), warped_skips=True)
    net.eval()
    source = torch.rand(1, 3, SIZE, SIZE)
    kp = random_kp(1, jacobian=True)
    still = net(source, kp_driving=kp, kp_source=kp)
    moved = net(source, kp_driving=random_kp(1), kp_source=kp)
    # the skip at full resolution is the encoder feature itself when nothing moves (identity flow)
    encoder = net.first(source)
    occlusion = torch.nn.functional.interpolate(still["occlusion_map"], size=(SIZE, SIZE), mode="bilinear",
                                                align_corners=True)
    skip = warp_and_mask(encoder, still["deformation"], still["occlusion_map"])
    torch.testing.assert_close(skip, encoder * occlusion, atol=1e-5, rtol=1e-4)
    assert (moved["prediction"] - still["prediction"]).abs().mean() > 1e-3


def test_channels_last_keeps_parameters_and_outputs_for_2d_and_3d_layers() -> None:
    from reenact.utils.memory_format import to_channels_last

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.Flatten(1, 2), nn.Conv2d(4 * 3, 5, 3, padding=1),
                        nn.BatchNorm2d(5))
    net.eval()
    x = torch.rand(2, 2, 3, 8, 8)
    before = net(x)
    params = list(net.parameters())
    to_channels_last(net)
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]  # optimisers keep working
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert net[2].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


def blend_generator(bias: float) -> OcclusionAwareGenerator:
    torch.manual_seed(0)
    return OcclusionAwareGenerator(num_kp=K, block_expansion=8, max_features=16, num_down_blocks=2,
                                   num_bottleneck_blocks=1, dense_motion=small_dense_motion(), warped_skips=True,
                                   blend_warped_source=True, blend_init_bias=bias)


def test_blend_takes_visible_pixels_from_the_warped_source() -> None:
    source = torch.rand(2, 3, SIZE, SIZE)
    kp_source, kp_driving = random_kp(2), random_kp(2)
    for bias, expected in ((30.0, "deformed"), (-30.0, "decoder")):
        net = blend_generator(bias).eval()
        nn.init.zeros_(net.blend.head.weight)  # a constant mask: sigmoid(+-30) is 1 or 0 to 1e-13
        with torch.no_grad():
            out = net(source, kp_driving=kp_driving, kp_source=kp_source)
            net.blend = None
            decoder = net(source, kp_driving=kp_driving, kp_source=kp_source)["prediction"]
        target = out["deformed"] if expected == "deformed" else decoder
        torch.testing.assert_close(out["prediction"], target, atol=1e-6, rtol=0)
        assert out["blend_mask"].shape == (2, 1, SIZE, SIZE)


def test_blend_adds_one_head_and_starts_near_the_warped_source() -> None:
    plain = OcclusionAwareGenerator(num_kp=K, block_expansion=8, max_features=16, num_down_blocks=2,
                                    num_bottleneck_blocks=1, dense_motion=small_dense_motion(), warped_skips=True)
    blended = blend_generator(2.0)
    assert num_params(blended) - num_params(plain) == 8 * 7 * 7 + 1  # the 7x7 mask head on 8 decoder channels
    source = torch.rand(2, 3, SIZE, SIZE)
    kp = random_kp(2)
    with torch.no_grad():  # equal keypoints: identity flow, so the warped source is the source
        start = {name: (net(source, kp_driving=kp, kp_source=kp)["prediction"] - source).abs().mean().item()
                 for name, net in (("plain", plain.eval()), ("blended", blended.eval()))}
    assert start["blended"] < 0.3 * start["plain"], start
