"""Loss modules: perceptual pyramid, image pyramid, equivariance transform and loss, GAN terms, priors.

VGG runs with random weights (``pretrained=False``) on tiny images: nothing downloads and the file stays fast.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reenact.errors import ReenactError
from reenact.families.liveportrait.losses import deformation_prior_loss, head_pose_loss, keypoint_prior_loss
from reenact.layers.geometry import heatmap_to_keypoints, make_coordinate_grid, spatial_softmax
from reenact.layers.vgg import VGG19Features
from reenact.losses import (
    EquivarianceLoss,
    ImagePyramid,
    LandmarkGuidance,
    LossContext,
    LossTerm,
    Objective,
    PerceptualPyramidLoss,
    PyramidL1,
    RandomTPSTransform,
    WarpedSourceL1,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    wing_loss,
)

# ----------------------------------------------------------------------------------------------- pyramid


def test_pyramid_shapes_and_identity_level() -> None:
    pyramid = ImagePyramid([1, 0.5, 0.25, 0.125], num_channels=3)
    image = torch.rand(2, 3, 64, 64)
    levels = pyramid(image)
    assert list(levels) == [1.0, 0.5, 0.25, 0.125]
    assert [tuple(level.shape) for level in levels.values()] == [
        (2, 3, size, size) for size in (64, 32, 16, 8)
    ]
    assert torch.equal(levels[1.0], image)
    assert sum(1 for _ in pyramid.parameters()) == 0 and len(pyramid.state_dict()) == 0


def test_pyramid_is_anti_aliased() -> None:
    # a pixel checkerboard aliases to a flat 0 under plain subsampling; the blurred pyramid keeps its mean
    index = torch.arange(32)
    checkerboard = ((index.view(-1, 1) + index.view(1, -1)) % 2).float().expand(1, 1, 32, 32)
    half = ImagePyramid([0.5], num_channels=1)(checkerboard)[0.5]
    interior = half[..., 4:-4, 4:-4]
    assert torch.equal(checkerboard[..., ::2, ::2], torch.zeros(1, 1, 16, 16))
    # FOMM's sigma = 0.5 blur at scale 0.5 turns the pattern into a flat grey of about 1/3
    assert torch.allclose(interior, interior.mean().expand_as(interior), atol=1e-5)
    assert 0.3 < interior.mean().item() < 0.7


def test_pyramid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="scale"):
        ImagePyramid([1, 2.0])
    with pytest.raises(ValueError, match="empty"):
        ImagePyramid([])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ImagePyramid([1])(torch.rand(1, 1, 8, 8))


# -------------------------------------------------------------------------------------------- perceptual


def test_vgg_features_layout_frozen_and_eval() -> None:
    vgg = VGG19Features(pretrained=False)
    features = vgg(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [
        (1, 64, 32, 32),
        (1, 128, 16, 16),
        (1, 256, 8, 8),
        (1, 512, 4, 4),
        (1, 512, 2, 2),
    ]
    # conv1_1 .. conv5_1 of VGG19: exactly 12,944,960 parameters, no classifier
    assert sum(p.numel() for p in vgg.parameters()) == 12_944_960
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    with pytest.raises(ValueError, match="H, W >= 16"):
        vgg(torch.rand(1, 3, 8, 8))


def test_perceptual_zero_for_identical_positive_otherwise() -> None:
    loss = PerceptualPyramidLoss(scales=[1, 0.5], pretrained=False)
    target = torch.rand(1, 3, 32, 32)
    assert loss(target, target.clone()).item() == 0.0
    assert loss(torch.rand(1, 3, 32, 32), target).item() > 0.0


def test_perceptual_layer_weights_scale_the_loss() -> None:
    torch.manual_seed(1)
    prediction, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    unit = PerceptualPyramidLoss(scales=[1], layer_weights=[1, 1, 1, 1, 1], pretrained=False)
    vgg_state = {name: p.detach().clone() for name, p in unit.vgg.named_parameters()}
    tenfold = PerceptualPyramidLoss(scales=[1], layer_weights=[10, 10, 10, 10, 10], pretrained=False)
    only_first = PerceptualPyramidLoss(scales=[1], layer_weights=[1, 0, 0, 0, 0], pretrained=False)
    for module in (tenfold, only_first):
        module.vgg.load_state_dict(vgg_state)  # same random VGG in all three
    base = unit(prediction, target)
    assert torch.allclose(tenfold(prediction, target), 10 * base, rtol=1e-5)
    first = (unit.vgg(prediction)[0] - unit.vgg(target)[0]).abs().mean()
    assert torch.allclose(only_first(prediction, target), first, rtol=1e-5)
    with pytest.raises(ValueError, match="layer_weights"):
        PerceptualPyramidLoss(scales=[1], layer_weights=[10, 10], pretrained=False)


def test_perceptual_falls_when_optimising_prediction() -> None:
    loss = PerceptualPyramidLoss(scales=[1], pretrained=False)
    target = torch.rand(1, 3, 16, 16)
    prediction = nn.Parameter(torch.rand(1, 3, 16, 16))
    optimiser = torch.optim.Adam([prediction], lr=0.05)
    values = []
    for _ in range(4):
        value = loss(prediction, target)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        values.append(value.item())
    assert values[-1] < 0.9 * values[0]
    assert all(later < earlier for earlier, later in zip(values, values[1:], strict=False))
    assert all(p.grad is None for p in loss.vgg.parameters())


def test_vgg_weights_path_round_trip_full_and_features_only(tmp_path) -> None:
    reference = VGG19Features(pretrained=False)
    features_only = {
        name.removeprefix("features."): p.detach().clone() for name, p in reference.named_parameters()
    }
    # a full torchvision vgg19 state dict also holds conv5_2.. (indices 30+) and the classifier
    full = {f"features.{name}": tensor for name, tensor in features_only.items()}
    full["features.30.weight"] = torch.zeros(512, 512, 3, 3)
    full["classifier.0.weight"] = torch.zeros(8, 8)
    image = torch.rand(1, 3, 16, 16)
    expected = reference(image)
    for name, state in (("full.pth", full), ("features.pth", features_only)):
        torch.save(state, tmp_path / name)
        loaded = VGG19Features(pretrained=False, weights_path=str(tmp_path / name))
        for got, want in zip(loaded(image), expected, strict=True):
            assert torch.equal(got, want)


def test_vgg_missing_or_incomplete_weights_raise_one_line_errors(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(FileNotFoundError) as info:
        VGG19Features(pretrained=False, weights_path=str(missing))
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match="0.bias"):
        VGG19Features(pretrained=False, weights_path=str(tmp_path / "partial.pth"))


def test_pretrained_path_uses_torchvision_imagenet_weights(monkeypatch) -> None:
    # no download: intercept the torchvision weight fetch and check what is asked for and loaded
    from torchvision.models import VGG19_Weights
    from torchvision.models._api import WeightsEnum

    source = VGG19Features(pretrained=False)
    full_state = {name: p.detach().clone() for name, p in source.named_parameters()}  # "features.N.*"
    requests = []

    def fake_get_state_dict(self, *args, **kwargs):
        requests.append((self, kwargs))
        return full_state

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    loaded = VGG19Features(pretrained=True)
    assert requests[0][0] is VGG19_Weights.IMAGENET1K_V1 and requests[0][1]["weights_only"] is True
    image = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(image)[-1], source(image)[-1])


def test_vgg_stays_out_of_checkpoints_and_strict_loading_works() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.perceptual = PerceptualPyramidLoss(scales=[1], pretrained=False)

    holder = Holder()
    state = holder.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]
    vgg_before = holder.perceptual.vgg.features[0].weight.clone()
    fresh = Holder()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.head.weight, holder.head.weight)
    assert torch.equal(holder.perceptual.vgg.features[0].weight, vgg_before)
    # a checkpoint that does contain VGG weights (e.g. written elsewhere) still loads them
    with_vgg = dict(state)
    with_vgg["perceptual.vgg.features.0.weight"] = torch.zeros_like(vgg_before)
    fresh.load_state_dict(with_vgg, strict=True)
    assert torch.count_nonzero(fresh.perceptual.vgg.features[0].weight) == 0


# ------------------------------------------------------------------------------------- TPS / equivariance


def test_tps_with_zero_sigmas_is_identity() -> None:
    transform = RandomTPSTransform(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    frame = torch.rand(2, 3, 24, 20)
    assert torch.allclose(transform.transform_frame(frame), frame, atol=1e-5)
    coordinates = torch.rand(2, 7, 2) * 2 - 1
    assert torch.equal(transform.warp_coordinates(coordinates), coordinates)
    assert torch.allclose(transform.jacobian(coordinates), torch.eye(2).expand(2, 7, 2, 2))


def test_affine_transform_jacobian_and_points() -> None:
    transform = RandomTPSTransform(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=0)
    transform.theta = torch.tensor(
        [[[1.1, 0.2, 0.05], [-0.1, 0.9, -0.03]], [[0.8, -0.3, 0.0], [0.25, 1.2, 0.1]]]
    )
    coordinates = torch.rand(2, 5, 2) * 2 - 1
    matrix, offset = transform.theta[:, :, :2], transform.theta[:, :, 2]
    expected = torch.einsum("bij,bkj->bki", matrix, coordinates) + offset.unsqueeze(1)
    assert torch.allclose(transform.warp_coordinates(coordinates), expected, atol=1e-6)
    assert torch.allclose(transform.jacobian(coordinates), matrix.unsqueeze(1).expand(2, 5, 2, 2), atol=1e-6)


def test_tps_jacobian_matches_finite_differences_and_keeps_fomm_quirk() -> None:
    generator = torch.Generator().manual_seed(3)
    transform = RandomTPSTransform(
        2, sigma_affine=0.1, sigma_tps=0.05, points_tps=5, dtype=torch.float64, generator=generator
    )
    coordinates = torch.rand(2, 6, 2, dtype=torch.float64) * 1.6 - 0.8
    step = 1e-6
    numeric = torch.stack(
        [
            (
                transform.warp_coordinates(coordinates + step * torch.eye(2, dtype=torch.float64)[j])
                - transform.warp_coordinates(coordinates - step * torch.eye(2, dtype=torch.float64)[j])
            )
            / (2 * step)
            for j in range(2)
        ],
        dim=-1,
    )  # (B, N, 2, 2), [..., i, j] = dT_i/dz_j
    assert torch.allclose(transform.jacobian(coordinates), numeric, atol=1e-6)
    # FOMM's TPS adds one scalar per point to x and y alike
    affine_only = RandomTPSTransform(2, 0.0, 0.0, 0)
    affine_only.theta = transform.theta
    displacement = transform.warp_coordinates(coordinates) - affine_only.warp_coordinates(coordinates)
    assert displacement.abs().max() > 1e-4
    assert torch.allclose(displacement[..., 0], displacement[..., 1])


def test_tps_radial_basis_uses_l1_distance() -> None:
    # one control point at the centre with weight 2: T(z) = z + 2·r²·log r with r = |x| + |y|
    transform = RandomTPSTransform(1, sigma_affine=0.0, sigma_tps=1.0, points_tps=1)
    transform.control_params = torch.tensor([[2.0]])
    point = torch.tensor([[[0.3, -0.4]]])
    radius = 0.7  # L1; the Euclidean distance would be 0.5
    shift = 2.0 * radius**2 * math.log(radius + 1e-6)
    assert torch.allclose(transform.warp_coordinates(point), point + shift, atol=1e-6)


def test_tps_radial_basis_can_be_tpsmms_squared_euclidean_one() -> None:
    # the same point under TPSMM's kernel: T(z) = z + 2·s·log(s + 1e-9) with s = x² + y² = 0.25
    transform = RandomTPSTransform(1, sigma_affine=0.0, sigma_tps=1.0, points_tps=1, tps_kernel="squared_euclidean")
    transform.control_params = torch.tensor([[2.0]])
    point = torch.tensor([[[0.3, -0.4]]])
    shift = 2.0 * 0.25 * math.log(0.25 + 1e-9)
    assert torch.allclose(transform.warp_coordinates(point), point + shift, atol=1e-6)
    with pytest.raises(ValueError, match="tps_kernel must be one of"):
        RandomTPSTransform(1, 0.0, 1.0, 1, tps_kernel="euclidean")


def test_the_tpsmm_presets_train_with_the_squared_euclidean_kernel() -> None:
    from hydra.utils import instantiate

    from reenact.losses.equivariance import TPS_KERNELS
    from reenact.utils.hydra_utils import compose_config

    for preset, kernel in (("tpsmm", "squared_euclidean"), ("tpsmm_small", "squared_euclidean"), ("fomm", "l1")):
        cfg = compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/kernel"])
        term = instantiate(cfg.model.objective.terms.equivariance_value)
        assert term.loss.tps_kernel == kernel, preset
        assert term.loss.sample_transform(1, torch.device("cpu"), torch.float32).kernel is TPS_KERNELS[kernel]


def test_transform_frame_agrees_with_warp_coordinates() -> None:
    # warping an image of its own coordinates must give T(z) wherever T(z) stays inside the frame
    transform = RandomTPSTransform(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(0))
    grid = make_coordinate_grid((33, 33))  # (H, W, 2)
    coordinate_image = grid.permute(2, 0, 1).unsqueeze(0).expand(2, 2, 33, 33).contiguous()
    warped_image = transform.transform_frame(coordinate_image).permute(0, 2, 3, 1)  # (B, H, W, 2)
    expected = transform.warp_coordinates(grid.view(1, -1, 2)).view(2, 33, 33, 2)
    inside = (expected.abs() <= 1).all(-1)
    assert inside.float().mean() > 0.5
    assert torch.allclose(warped_image[inside], expected[inside], atol=1e-4)


def test_transform_is_reproducible_with_generator() -> None:
    first = RandomTPSTransform(3, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(7))
    again = RandomTPSTransform(3, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(7))
    other = RandomTPSTransform(3, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.theta, again.theta) and torch.equal(first.control_params, again.control_params)
    assert not torch.equal(first.theta, other.theta)
    assert 0.01 < (first.theta - torch.eye(2, 3)).std() < 0.2


def _blob_frames(centres: torch.Tensor, size: int = 48) -> torch.Tensor:
    """(B, K, 2) centres -> (B, K, size, size) Gaussian blobs, one keypoint per channel."""
    grid = make_coordinate_grid((size, size))  # (H, W, 2)
    squared = ((grid.view(1, 1, size, size, 2) - centres.view(*centres.shape[:2], 1, 1, 2)) ** 2).sum(-1)
    return torch.exp(-squared / (2 * 0.08**2))


def _centroid_detector(frame: torch.Tensor) -> dict[str, torch.Tensor]:
    # intensity-weighted centroid per channel: equivariant to affine warps up to sampling error
    heatmap = frame / frame.sum((2, 3), keepdim=True)
    return {"value": heatmap_to_keypoints(heatmap)}


def test_equivariance_loss_zero_under_identity_transform_2d_and_3d() -> None:
    frame = torch.rand(2, 4, 24, 24)

    def detect(image: torch.Tensor) -> dict[str, torch.Tensor]:
        value = heatmap_to_keypoints(spatial_softmax(image * 5, temperature=1.0))  # (B, K, 2)
        return {"value": value, "jacobian": torch.eye(2).expand(2, 4, 2, 2) * 1.5}

    def detect_3d(image: torch.Tensor) -> dict[str, torch.Tensor]:
        planar = detect(image)["value"]
        depth = torch.rand(2, 4, 1)  # differs per call: depth must not enter the loss
        jacobian = torch.rand(2, 4, 3, 3)  # so do the depth rows and columns of the 3x3 Jacobian
        jacobian[..., :2, :2] = torch.eye(2) * 1.5
        return {"value": torch.cat([planar, depth], -1), "jacobian": jacobian}

    loss = EquivarianceLoss(sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    for detector in (detect, detect_3d):
        terms = loss(detector, frame, detector(frame))
        assert terms["equivariance_value"].item() < 1e-5
        assert terms["equivariance_jacobian"].item() < 1e-5
        assert torch.allclose(terms["transformed_frame"], frame, atol=1e-5)
    no_jacobian = loss(_centroid_detector, frame, _centroid_detector(frame))
    assert "equivariance_jacobian" not in no_jacobian


def test_equivariance_loss_separates_equivariant_from_broken_detector() -> None:
    torch.manual_seed(0)
    centres = torch.rand(2, 3, 2) * 0.8 - 0.4
    frame = _blob_frames(centres)
    loss = EquivarianceLoss(sigma_affine=0.08, sigma_tps=0.0, points_tps=5)
    transform = loss.sample_transform(2, frame.device, frame.dtype, torch.Generator().manual_seed(5))
    good = loss(_centroid_detector, frame, _centroid_detector(frame), transform=transform)

    def fixed_points(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"value": centres}  # ignores the image: not equivariant

    broken = loss(fixed_points, frame, {"value": centres}, transform=transform)
    assert good["equivariance_value"].item() < 0.005
    assert broken["equivariance_value"].item() > 5 * good["equivariance_value"].item()


def test_equivariance_jacobian_term_uses_transform_gradient_in_the_right_order() -> None:
    # with T affine (matrix A), a detector returning J_t = A⁻¹·J_d is exactly equivariant
    transform = RandomTPSTransform(1, 0.0, 0.0, 0)
    matrix = torch.tensor([[1.0, 0.5], [0.0, 1.0]])  # shears that do not commute
    transform.theta = torch.cat([matrix, torch.zeros(2, 1)], 1).unsqueeze(0)
    jacobian_driving = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    points = torch.zeros(1, 1, 2)
    loss = EquivarianceLoss()

    def detector_with(jacobian: torch.Tensor):
        return lambda image: {"value": points, "jacobian": jacobian}

    kp_driving = {"value": points, "jacobian": jacobian_driving}
    exact = loss(
        detector_with(torch.linalg.inv(matrix) @ jacobian_driving),
        torch.rand(1, 3, 16, 16),
        kp_driving,
        transform=transform,
    )
    swapped = loss(
        detector_with(jacobian_driving @ torch.linalg.inv(matrix)),
        torch.rand(1, 3, 16, 16),
        kp_driving,
        transform=transform,
    )
    assert exact["equivariance_jacobian"].item() < 1e-6
    assert swapped["equivariance_jacobian"].item() > 0.1


def test_equivariance_losses_backpropagate_into_detector() -> None:
    jacobian_param = nn.Parameter(torch.eye(2) + 0.1 * torch.randn(2, 2))
    temperature = nn.Parameter(torch.tensor(0.5))

    def detect(image: torch.Tensor) -> dict[str, torch.Tensor]:
        value = heatmap_to_keypoints(spatial_softmax(image, temperature=1.0) ** temperature.exp())
        return {"value": value, "jacobian": jacobian_param.expand(*value.shape[:2], 2, 2)}

    frame = torch.rand(2, 3, 20, 20)
    terms = EquivarianceLoss(sigma_affine=0.05, sigma_tps=0.01, points_tps=3)(detect, frame, detect(frame))
    (terms["equivariance_value"] + terms["equivariance_jacobian"]).backward()
    assert jacobian_param.grad is not None and temperature.grad is not None
    assert torch.isfinite(jacobian_param.grad).all() and jacobian_param.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- adversarial


def test_gan_losses_on_known_maps() -> None:
    half = [torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 2, 2), 0.5)]
    assert generator_adversarial_loss(half, "lsgan").item() == pytest.approx(2 * 0.25)
    assert generator_adversarial_loss(half, "hinge").item() == pytest.approx(2 * -0.5)
    ones, zeros = [torch.ones(1, 1, 3, 3)], [torch.zeros(1, 1, 3, 3)]
    assert discriminator_adversarial_loss(ones, zeros, "lsgan").item() == 0.0
    assert discriminator_adversarial_loss(half[:1], half[:1], "lsgan").item() == pytest.approx(0.5)
    assert (
        discriminator_adversarial_loss(
            [torch.full((1, 1, 2, 2), 2.0)], [torch.full((1, 1, 2, 2), -2.0)], "hinge"
        ).item()
        == 0.0
    )
    assert discriminator_adversarial_loss(zeros, zeros, "hinge").item() == pytest.approx(2.0)
    # hinge saturates: a real map of 0.25 costs 0.75, a fake map of -0.5 costs 0.5
    assert discriminator_adversarial_loss(
        [torch.full((1, 1, 2, 2), 0.25)], [torch.full((1, 1, 2, 2), -0.5)], "hinge"
    ).item() == pytest.approx(1.25)


def test_unknown_gan_kind_names_it() -> None:
    with pytest.raises(ValueError, match="'wgan'"):
        generator_adversarial_loss([torch.zeros(1)], "wgan")
    with pytest.raises(ValueError, match="'vanilla'"):
        discriminator_adversarial_loss([torch.zeros(1)], [torch.zeros(1)], "vanilla")


def test_feature_matching() -> None:
    real = [
        [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)],
        [torch.rand(2, 4, 4, 4), torch.rand(2, 8, 2, 2)],
    ]
    assert feature_matching_loss(real, [[f.clone() for f in scale] for scale in real], [10, 10]).item() == 0.0
    real_leaf = torch.zeros(1, 2, 3, 3, requires_grad=True)
    fake_leaf = torch.full((1, 2, 3, 3), 0.1, requires_grad=True)
    other = torch.zeros(1, 2, 3, 3)
    value = feature_matching_loss([[real_leaf, other]], [[fake_leaf, other + 5]], [10, 0])
    assert value.item() == pytest.approx(1.0)  # 10 · 0.1; the second block has weight 0
    value.backward()
    assert real_leaf.grad is None and fake_leaf.grad is not None
    with pytest.raises(ValueError, match="weights"):
        feature_matching_loss([[other]], [[other]], [10, 10])


# ------------------------------------------------------------------------------------------------ priors


def test_keypoint_prior_hand_computed() -> None:
    close = torch.tensor([[[0.0, 0.0, 0.33], [0.1, 0.0, 0.33]]])  # squared distance 0.01
    assert keypoint_prior_loss(close).item() == pytest.approx(2 * (0.1 - 0.01))  # both ordered pairs
    far = torch.tensor([[[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]]])  # squared distance 1 > margin; mean depth 0
    assert keypoint_prior_loss(far).item() == pytest.approx(0.33)
    batch = torch.cat([close, far])
    assert keypoint_prior_loss(batch).item() == pytest.approx((0.18 + 0.33) / 2)
    assert keypoint_prior_loss(far, margin=2.0, target_depth=0.0).item() == pytest.approx(2 * (2.0 - 1.0))
    coincident = torch.zeros(1, 3, 3, requires_grad=True)
    keypoint_prior_loss(coincident).backward()
    assert torch.isfinite(coincident.grad).all()


def test_deformation_and_head_pose_priors() -> None:
    deltas = torch.tensor([[[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]]])
    assert deformation_prior_loss(deltas).item() == pytest.approx(3.0)  # (6 + 0) / 2 keypoints
    predicted = torch.tensor([[10.0, -20.0, 30.0], [0.0, 0.0, 0.0]])
    assert head_pose_loss(predicted, torch.zeros(2, 3)).item() == pytest.approx(30.0)  # (60 + 0) / 2
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        head_pose_loss(torch.zeros(2, 2), torch.zeros(2, 2))


def test_wing_loss_pieces_and_continuity() -> None:
    target = torch.zeros(3)
    assert wing_loss(torch.tensor([2.0]), target[:1]).item() == pytest.approx(10 * math.log(2))
    linear_offset = 10 - 10 * math.log(6)
    assert wing_loss(torch.tensor([-20.0]), target[:1]).item() == pytest.approx(20 - linear_offset)
    below, above = (
        wing_loss(torch.tensor([10 - 1e-4]), target[:1]),
        wing_loss(torch.tensor([10 + 1e-4]), target[:1]),
    )
    assert above.item() == pytest.approx(below.item(), abs=1e-3)
    assert wing_loss(torch.tensor([0.0, 2.0, -20.0]), target).item() == pytest.approx(
        (10 * math.log(2) + 20 - linear_offset) / 3
    )


class _KeypointNetwork(nn.Module):
    """Stands in for a keypoint family: its motion's ``value`` are the 2D keypoints."""

    family = "stub"

    @staticmethod
    def keypoints_2d(motion: dict) -> torch.Tensor | None:
        return motion.get("value")


def test_landmark_guidance_pulls_the_chosen_keypoints_onto_their_landmarks_and_skips_faceless_frames() -> None:
    torch.manual_seed(0)
    landmarks = torch.rand(2, 68, 2) * 2 - 1  # normalised [-1, 1], as the datasets return them
    landmarks[1] = float("nan")  # frame 1: preprocessing found no face
    batch = {"source_landmarks": landmarks, "driving_landmarks": landmarks}
    keypoints = torch.zeros(2, 3, 2, requires_grad=True)
    objective = Objective(terms={"landmark": LandmarkGuidance(keypoints=[0, 2], landmark_indices=[36, 45])})
    optimiser = torch.optim.Adam([keypoints], lr=0.02)
    first = None
    for _ in range(300):
        motion = {"value": keypoints}
        losses = objective(LossContext(_KeypointNetwork(), batch, {"motion_source": motion, "motion_driving": motion}))
        assert set(losses) == {"landmark_source", "landmark_driving"}
        loss = sum(losses.values())
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.05 * first
    torch.testing.assert_close(keypoints[0, [0, 2]].detach(), landmarks[0, [36, 45]], atol=1e-2, rtol=0)
    # the unguided keypoint and the face-less frame get no gradient
    assert keypoints[0, 1].abs().max() == 0 and keypoints[1].abs().max() == 0


def test_landmark_guidance_without_landmarks_adds_nothing_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    term = LandmarkGuidance(keypoints=[0], landmark_indices=[30])
    motion = {"value": torch.zeros(1, 1, 2)}
    context = LossContext(_KeypointNetwork(), {"driving": torch.zeros(1, 3, 8, 8)},
                          {"motion_source": motion, "motion_driving": motion})
    with caplog.at_level("WARNING", logger="reenact.losses.landmarks"):
        assert term(context) == {} and term(context) == {}
    warnings = [r.getMessage() for r in caplog.records if r.name == "reenact.losses.landmarks"]
    assert len(warnings) == 1 and "--landmarks" in warnings[0] and "\n" not in warnings[0]


class _Network(nn.Module):
    """Stands in for a family in a LossContext: the objective only reads its name."""

    family = "stub"


def _losses(objective: Objective, batch: dict, output: dict) -> dict[str, torch.Tensor]:
    return objective(LossContext(_Network(), batch, output))


def test_reconstruction_l1_pyramid_sums_the_levels() -> None:
    def objective(scales: list[float]) -> Objective:
        return Objective(terms={"reconstruction_l1": PyramidL1(weight=100.0, scales=scales)})

    torch.manual_seed(0)
    driving, prediction = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    batch = {"driving": driving}
    output = {"prediction": prediction, "motion_source": {}, "motion_driving": {}}
    single = _losses(objective([1.0]), batch, output)["reconstruction_l1"]
    torch.testing.assert_close(single, 100.0 * (prediction - driving).abs().mean())
    pyramid = ImagePyramid([1.0, 0.5])
    levels = zip(pyramid(prediction).values(), pyramid(driving).values(), strict=True)
    expected = sum((a - b).abs().mean() for a, b in levels)
    two = _losses(objective([1.0, 0.5]), batch, output)["reconstruction_l1"]
    torch.testing.assert_close(two, 100.0 * expected)
    # independent noise averages out at the coarse level: it adds less than the full-resolution term
    assert single < two < 2 * single
    assert _losses(objective([1.0, 0.5]), batch, {**output, "prediction": driving})["reconstruction_l1"] == 0


def test_warped_source_l1_compares_the_warped_source_with_the_driving_frame() -> None:
    def objective() -> Objective:
        return Objective(terms={"warped_source_l1": WarpedSourceL1(weight=10.0)})

    torch.manual_seed(0)
    driving, deformed = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    output = {"prediction": torch.rand(2, 3, 32, 32), "deformed": deformed, "motion_source": {},
              "motion_driving": {}}
    losses = _losses(objective(), {"driving": driving}, output)
    assert set(losses) == {"warped_source_l1"}  # the prediction plays no part in it
    torch.testing.assert_close(losses["warped_source_l1"], 10.0 * (deformed - driving).abs().mean())
    assert _losses(objective(), {"driving": driving}, {**output, "deformed": driving})["warped_source_l1"] == 0
    # a user error (the preset lists a term its family cannot feed): one line from every entry point
    with pytest.raises(ReenactError, match="objective.terms.warped_source_l1 reads deformed, which the 'stub' family "
                                           "does not output"):
        _losses(objective(), {"driving": driving}, {**output, "deformed": None})


def test_objective_weighs_terms_names_parts_and_leaves_out_null_terms() -> None:
    class Sides(LossTerm):
        def compute(self, context: LossContext) -> dict[str, torch.Tensor]:
            return {"source": context.prediction.mean(), "driving": 2 * context.prediction.mean()}

    prediction = torch.full((1, 3, 8, 8), 0.5)
    objective = Objective(terms={"pixel": PyramidL1(weight=3.0), "off": None, "sides": Sides(weight=4.0)})
    assert list(objective.terms) == ["pixel", "sides"] and not objective.uses_discriminator
    losses = _losses(objective, {"driving": torch.zeros(1, 3, 8, 8)}, {"prediction": prediction})
    assert list(losses) == ["pixel", "sides_source", "sides_driving"]
    assert [v.item() for v in losses.values()] == pytest.approx([1.5, 2.0, 4.0])
    with pytest.raises(TypeError, match="weight must be a number"):
        PyramidL1(weight="10")
    with pytest.raises(TypeError, match=r"objective.terms.pixel: expected a LossTerm"):
        Objective(terms={"pixel": nn.L1Loss()})
