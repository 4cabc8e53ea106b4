"""LivePortrait-style networks F, M, W, G: the seed's WarpingNetwork contract, warp conventions, keypoint
transform, exact parameter counts at the released sizes, and a training step at small sizes."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from omegaconf import OmegaConf

from reenact.families.liveportrait import (
    AppearanceFeatureExtractor,
    DenseMotionParams,
    LivePortraitModel,
    MotionExtractor,
    SPADEDecoder,
    WarpingNetwork,
)
from reenact.families.liveportrait.keypoint_transform import (
    bins_to_degrees,
    pose_labels_to_model_angles,
    rotation_matrix,
    transform_keypoints,
)
from reenact.families.liveportrait.losses import HeadPose
from reenact.layers.geometry import make_coordinate_grid, warp_and_mask
from reenact.losses.photometric import WarpedSourceL1
from reenact.losses.terms import LossContext, Objective
from tests.helpers.fitting import final_l1_after_fitting

SMALL_KP = 10
SMALL_DENSE = {
    "block_expansion": 8,
    "num_blocks": 3,
    "max_features": 64,
    "compress": 2,
    "reshape_depth": 4,
    "kp_variance": 0.04,
    "mask_kernel_size": 3,
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_warping(estimate_occlusion_map: bool = True, flag_use_occlusion_map: bool = True) -> WarpingNetwork:
    return WarpingNetwork(
        num_kp=SMALL_KP,
        block_expansion=16,
        max_features=32,
        num_down_blocks=2,
        reshape_channel=8,
        estimate_occlusion_map=estimate_occlusion_map,
        dense_motion_params=dict(SMALL_DENSE),
        upscale=1,
        flag_use_occlusion_map=flag_use_occlusion_map,
    )


def small_model(warped_skips: bool = False) -> LivePortraitModel:
    return LivePortraitModel(
        AppearanceFeatureExtractor(
            image_channel=3,
            block_expansion=16,
            num_down_blocks=2,
            max_features=32,
            reshape_channel=8,
            reshape_depth=4,
            num_resblocks=2,
        ),
        MotionExtractor(num_kp=SMALL_KP, num_bins=66, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)),
        small_warping(),
        SPADEDecoder(
            upscale=1,
            max_features=32,
            block_expansion=16,
            out_channels=16,
            num_down_blocks=2,
            num_middle_blocks=1,
            spade_hidden=16,
        ),
        warped_skips=warped_skips,
    )


def random_kp(batch: int, num_kp: int) -> torch.Tensor:
    return torch.rand(batch, num_kp, 3) * 1.6 - 0.8


# --- W: the seed's contract -------------------------------------------------------------------------------


def test_warping_network_signature_matches_seed() -> None:
    params = inspect.signature(WarpingNetwork.__init__).parameters
    expected = {
        "num_kp": 15,
        "block_expansion": 64,
        "max_features": 256,
        "num_down_blocks": 2,
        "reshape_channel": 32,
        "estimate_occlusion_map": False,
        "dense_motion_params": None,
        "upscale": 1,
        "flag_use_occlusion_map": True,
    }
    assert [name for name in params if name != "self"] == list(expected)
    assert {name: params[name].default for name in expected} == expected
    resolved = WarpingNetwork().dense_motion_params.as_dict()
    assert {
        k: resolved[k] for k in ("block_expansion", "num_blocks", "max_features", "compress", "reshape_depth")
    } == {"block_expansion": 64, "num_blocks": 4, "max_features": 256, "compress": 4, "reshape_depth": 16}


def test_warping_network_seed_shapes_at_default_sizes() -> None:
    # the seed's defaults, with the occlusion estimate switched on so all three outputs are tensors
    net = WarpingNetwork(estimate_occlusion_map=True).eval()
    feature = torch.randn(1, 32, 16, 64, 64)
    with torch.no_grad():
        out = net(feature, random_kp(1, 15), random_kp(1, 15))
    assert set(out) == {"out", "occlusion_map", "deformation"}
    assert out["out"].shape == (1, 256, 64, 64)
    assert out["occlusion_map"].shape == (1, 1, 64, 64)
    assert out["deformation"].shape == (1, 16, 64, 64, 3)
    assert 0 <= out["occlusion_map"].min() and out["occlusion_map"].max() <= 1


def test_identity_deformation_when_keypoints_do_not_move() -> None:
    net = small_warping().eval()
    with torch.no_grad():  # make the masks far from uniform: the identity must not depend on them
        net.dense_motion_network.mask.weight.normal_(0, 1.0)
    feature = torch.randn(2, 8, 4, 16, 16)
    kp = random_kp(2, SMALL_KP)
    with torch.no_grad():
        dense = net.dense_motion_network(feature, kp, kp)
        out = net(feature, kp, kp)
    assert dense["mask"].amax(dim=1).mean() > 0.5  # masks concentrate on a few motions
    identity = make_coordinate_grid((4, 16, 16)).expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(out["deformation"], identity, atol=1e-6, rtol=0)
    # sampling at a grid within 1e-6 of the identity: an error relative to the feature's magnitude (randn, up to ~4)
    torch.testing.assert_close(
        WarpingNetwork.deform_input(feature, out["deformation"]), feature, atol=1e-5, rtol=1e-5
    )
    with torch.no_grad():
        moved = net(feature, kp, kp + 0.3)
    assert (moved["deformation"] - identity).abs().max() > 0.05


def test_deformation_follows_keypoint_translation() -> None:
    # driving keypoints = source + c: each driving voxel must sample the source at grid - w * c, 0 <= w <= 1
    net = small_warping().eval()
    feature = torch.randn(1, 8, 4, 16, 16)
    kp_source = random_kp(1, SMALL_KP)
    shift = torch.tensor([0.2, -0.1, 0.05])
    with torch.no_grad():
        deformation = net(feature, kp_source + shift, kp_source)["deformation"]
    weight = (make_coordinate_grid((4, 16, 16)) - deformation) / shift  # (1, D, H, W, 3), equal per axis
    assert weight.min() > -1e-5 and weight.max() < 1 + 1e-5
    torch.testing.assert_close(weight[..., 0], weight[..., 1], atol=1e-4, rtol=0)


def test_occlusion_flags_behave_as_the_seed_says() -> None:
    feature, kp_d, kp_s = torch.randn(2, 8, 4, 16, 16), random_kp(2, SMALL_KP), random_kp(2, SMALL_KP)
    net = small_warping(estimate_occlusion_map=True, flag_use_occlusion_map=True).eval()
    with torch.no_grad():
        masked = net(feature, kp_d, kp_s)
        net.flag_use_occlusion_map = False
        unmasked = net(feature, kp_d, kp_s)
    occlusion = masked["occlusion_map"]
    assert occlusion.shape == (2, 1, 16, 16) and 0 < occlusion.min() and occlusion.max() < 1
    torch.testing.assert_close(unmasked["occlusion_map"], occlusion)
    torch.testing.assert_close(masked["out"], unmasked["out"] * occlusion)
    assert not torch.allclose(masked["out"], unmasked["out"])

    plain = small_warping(estimate_occlusion_map=False, flag_use_occlusion_map=True).eval()
    assert plain.dense_motion_network.occlusion is None
    with torch.no_grad():
        out = plain(feature, kp_d, kp_s)
        warped = plain.deform_input(feature, out["deformation"]).reshape(2, 32, 16, 16)
        expected = plain.fourth(plain.third(warped))
    assert out["occlusion_map"] is None
    torch.testing.assert_close(out["out"], expected)


def test_warping_upscale_enlarges_feature_and_occlusion() -> None:
    feature, kp_d, kp_s = torch.randn(1, 8, 4, 16, 16), random_kp(1, SMALL_KP), random_kp(1, SMALL_KP)
    base = small_warping().eval()
    bigger = WarpingNetwork(
        num_kp=SMALL_KP,
        block_expansion=16,
        max_features=32,
        num_down_blocks=2,
        reshape_channel=8,
        estimate_occlusion_map=True,
        dense_motion_params=dict(SMALL_DENSE),
        upscale=2,
    ).eval()
    bigger.load_state_dict(base.state_dict())
    with torch.no_grad():
        small_out, big_out = base(feature, kp_d, kp_s), bigger(feature, kp_d, kp_s)
    assert big_out["out"].shape == (1, 32, 32, 32) and big_out["occlusion_map"].shape == (1, 1, 32, 32)
    torch.testing.assert_close(big_out["deformation"], small_out["deformation"])
    torch.testing.assert_close(
        big_out["out"][..., ::31, ::31], small_out["out"][..., ::15, ::15]
    )  # corners kept
    with pytest.raises(ValueError, match="upscale"):
        WarpingNetwork(upscale=0)


def test_dense_motion_params_are_validated() -> None:
    net = WarpingNetwork(
        num_kp=SMALL_KP,
        reshape_channel=8,
        dense_motion_params=OmegaConf.create(
            {"block_expansion": 8, "num_blocks": 2, "max_features": 32, "reshape_depth": 4}
        ),
    )
    assert net.dense_motion_params == DenseMotionParams(
        block_expansion=8, num_blocks=2, max_features=32, reshape_depth=4
    )
    with pytest.raises(ValueError, match="unknown key 'num_block'"):
        WarpingNetwork(dense_motion_params={"num_block": 3})
    with pytest.raises(TypeError, match="compress"):
        WarpingNetwork(dense_motion_params={"compress": 2.5})
    with pytest.raises(ValueError, match="feature_3d"):
        small_warping()(torch.randn(1, 8, 5, 16, 16), random_kp(1, SMALL_KP), random_kp(1, SMALL_KP))


# --- keypoint transform -----------------------------------------------------------------------------------


def test_bins_to_degrees_hand_computed() -> None:
    logits = torch.full((3, 66), -1e4)
    logits[0, 40] = 0.0  # all mass on bin 40: 40 * 3 - 97.5
    logits[1, 10] = logits[1, 20] = 0.0  # half on 10, half on 20: 15 * 3 - 97.5
    logits[2] = 0.0  # uniform: the centre, 32.5 * 3 - 97.5
    torch.testing.assert_close(bins_to_degrees(logits), torch.tensor([22.5, -52.5, 0.0]))


def test_rotation_matrices_are_orthonormal_and_ordered() -> None:
    angles = torch.rand(3, 16) * 180 - 90
    rot = rotation_matrix(*angles)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(16), atol=1e-5, rtol=0)
    # pitch = yaw = 90: R = Ry(90) Rx(90) = [[0,1,0],[0,0,-1],[-1,0,0]], returned transposed
    expected = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    got = rotation_matrix(torch.tensor([90.0]), torch.tensor([90.0]), torch.tensor([0.0]))[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    roll = rotation_matrix(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([90.0]))[0]
    torch.testing.assert_close(
        roll, torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6, rtol=0
    )


def test_keypoint_transform_hand_computed() -> None:
    kp_canonical = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    rot = rotation_matrix(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([0.0]))  # x -> -z
    exp = torch.tensor([[[0.1, 0.0, 0.0], [0.0, 0.0, 0.2]]])
    scale = torch.tensor([[2.0]])
    t = torch.tensor([[0.5, -0.5, 9.0]])  # t_z must be ignored
    # x_c R = [[0,0,-1],[0,1,0]]; + exp = [[.1,0,-1],[0,1,.2]]; * 2 = [[.2,0,-2],[0,2,.4]]; + (.5,-.5,0)
    expected = torch.tensor([[[0.7, -0.5, -2.0], [0.5, 1.5, 0.4]]])
    torch.testing.assert_close(
        transform_keypoints(kp_canonical, rot, exp, scale, t), expected, atol=1e-6, rtol=0
    )


def test_pose_labels_become_the_model_angles_that_turn_the_keypoints_as_the_head_turned() -> None:
    from reenact.data.synthetic_scene import head_rotation  # the renderer's own head rotation (the labels' convention)

    hand = pose_labels_to_model_angles(torch.tensor([[30.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 10.0]]))
    # +yaw (nose to image right) and +roll (counter-clockwise on screen) are negative in the model's y-down frame
    torch.testing.assert_close(hand, torch.tensor([[-30.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, -10.0]]),
                               atol=1e-4, rtol=0)
    torch.manual_seed(0)
    labels = torch.randn(16, 3) * torch.tensor([25.0, 15.0, 10.0])
    head = torch.randn(7, 3) * 0.3  # head-frame points, world axes: x right, y up, z towards the camera
    angles = pose_labels_to_model_angles(labels)
    for label, (yaw, pitch, roll) in zip(labels, angles, strict=True):
        world = head.double() @ torch.from_numpy(head_rotation(*label.tolist())).T  # rotated as the renderer does
        image_xy = world[:, :2] * torch.tensor([1.0, -1.0], dtype=torch.float64)  # u = X, v = -Y
        canonical = head * torch.tensor([1.0, -1.0, -1.0])  # the model's frame: y down, z into the screen
        rot = rotation_matrix(pitch.view(1), yaw.view(1), roll.view(1))
        moved = transform_keypoints(canonical[None], rot, torch.zeros(1, 7, 3), torch.ones(1, 1), torch.zeros(1, 3))
        torch.testing.assert_close(moved[0, :, :2].double(), image_xy, atol=1e-5, rtol=0)


def test_head_pose_term_compares_the_model_angles_with_converted_labels() -> None:
    objective = Objective(terms={"head_pose": HeadPose(weight=1.0)})
    labels = torch.tensor([[20.0, 5.0, 8.0], [-10.0, -3.0, 0.0]])

    def head_pose_losses(angles: torch.Tensor) -> list[float]:
        kp = {"yaw": angles[:, 0], "pitch": angles[:, 1], "roll": angles[:, 2]}
        batch = {"driving": torch.rand(2, 3, 8, 8), "source_pose": labels, "driving_pose": labels}
        output = {"prediction": torch.rand(2, 3, 8, 8), "motion_source": kp, "motion_driving": kp}
        losses = objective(LossContext(small_model(), batch, output))
        return [losses["head_pose_source"].item(), losses["head_pose_driving"].item()]

    assert head_pose_losses(pose_labels_to_model_angles(labels)) == pytest.approx([0.0, 0.0], abs=1e-4)
    assert min(head_pose_losses(labels)) > 10.0  # the raw labels turn the other way in yaw and roll


# --- exact parameter counts at LivePortrait's released sizes ----------------------------------------------


def test_parameter_counts_at_released_sizes() -> None:
    f = AppearanceFeatureExtractor(
        image_channel=3,
        block_expansion=64,
        num_down_blocks=2,
        max_features=512,
        reshape_channel=32,
        reshape_depth=16,
        num_resblocks=6,
    )
    m = MotionExtractor(num_kp=21, num_bins=66, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    w = WarpingNetwork(
        num_kp=21,
        block_expansion=64,
        max_features=512,
        num_down_blocks=2,
        reshape_channel=32,
        estimate_occlusion_map=True,
        upscale=1,
        flag_use_occlusion_map=True,
        dense_motion_params={
            "block_expansion": 32,
            "max_features": 1024,
            "num_blocks": 5,
            "reshape_depth": 16,
            "compress": 4,
        },
    )
    g = SPADEDecoder(upscale=2, max_features=512, block_expansion=64, out_channels=64, num_down_blocks=2)
    assert n_params(f) == 836_224
    assert n_params(m) == 28_118_728
    assert n_params(w) == 45_529_829
    assert n_params(w.dense_motion_network) == 44_283_621
    assert n_params(g) == 55_365_388
    model = LivePortraitModel(f, m, w, g)  # the released sizes wire together
    assert sum(len(group) for group in model.optimizer_groups().values()) == len(list(model.parameters()))


# --- G and the assembled model at small sizes -------------------------------------------------------------


def test_spade_decoder_pixel_shuffle_upscale() -> None:
    g = SPADEDecoder(
        upscale=2,
        max_features=32,
        block_expansion=16,
        out_channels=16,
        num_down_blocks=2,
        num_middle_blocks=1,
        spade_hidden=16,
    )
    image = g(torch.randn(2, 32, 8, 8))
    assert image.shape == (2, 3, 64, 64) and 0 <= image.min() and image.max() <= 1


def test_model_forward_contract() -> None:
    model = small_model().eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(source, driving)
        kp_alone = model.encode_motion(source)
    assert model.family == "liveportrait"
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert 0 <= out["prediction"].min() and out["prediction"].max() <= 1
    assert out["deformation"].shape == (2, 4, 16, 16, 3) and out["occlusion_map"].shape == (2, 1, 16, 16)
    assert out["deformed"].shape == (2, 3, 64, 64)
    for kp in (out["motion_source"], out["motion_driving"]):
        assert kp["value"].shape == kp["kp_canonical"].shape == kp["exp"].shape == (2, SMALL_KP, 3)
        assert kp["pitch_bins"].shape == (2, 66) and kp["yaw"].shape == (2,) and kp["roll"].shape == (2,)
        assert kp["t"].shape == (2, 3) and kp["scale"].shape == (2, 1) and kp["rotation"].shape == (2, 3, 3)
        assert model.keypoints_2d(kp).shape == (2, SMALL_KP, 2)
    # one batched M call equals a separate one; the driving keypoints use the source's canonical keypoints
    torch.testing.assert_close(out["motion_source"]["value"], kp_alone["value"], atol=1e-5, rtol=1e-4)
    kp_d = out["motion_driving"]
    expected = transform_keypoints(
        out["motion_source"]["kp_canonical"], kp_d["rotation"], kp_d["exp"], kp_d["scale"], kp_d["t"]
    )
    torch.testing.assert_close(kp_d["value"], expected)
    with torch.no_grad():  # animating with unchanged keypoints reproduces the identity warp
        same = model.render(source, kp_alone, {"value": kp_alone["value"]})
    identity = make_coordinate_grid((4, 16, 16)).expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(same["deformation"], identity, atol=1e-6, rtol=0)
    torch.testing.assert_close(same["deformed"], source, atol=1e-5, rtol=0)


def test_model_rejects_mismatched_networks() -> None:
    model = small_model()
    other_m = MotionExtractor(num_kp=SMALL_KP + 1, depths=(1,), dims=(8,))
    with pytest.raises(ValueError, match="keypoints"):
        LivePortraitModel(
            model.appearance_feature_extractor, other_m, model.warping_network, model.spade_decoder
        )


def test_one_optimisation_step_lowers_l1() -> None:
    model = small_model().train()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    groups = model.optimizer_groups()
    optimiser = torch.optim.Adam([{"params": params} for params in groups.values()], lr=1e-3)
    loss = (model(source, driving)["prediction"] - driving).abs().mean()
    optimiser.zero_grad()
    loss.backward()
    for name, params in groups.items():  # gradients reach M through the keypoints, and F + W + G
        grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))
        assert grad > 0, name
    optimiser.step()
    with torch.no_grad():
        after = (model(source, driving)["prediction"] - driving).abs().mean()
    assert after < loss.detach()


# --- warped skips (an option of the small preset, not of LivePortrait) -------------------------------------


def test_warped_skips_add_no_parameters_at_small_sizes_and_carry_detail_the_volume_blurs() -> None:
    torch.manual_seed(0)
    plain = small_model(warped_skips=False)
    torch.manual_seed(0)
    skips = small_model(warped_skips=True)
    assert n_params(plain) == n_params(skips)
    images = torch.rand(2, 3, 64, 64)  # pixel noise: only a path finer than the 16x16 volume reproduces it
    kp = random_kp(2, SMALL_KP)
    motion = {"value": kp}
    # 25 steps at batch 2 already separate them (skips / plain = 0.46 with these seeds)
    errors = {name: final_l1_after_fitting(lambda net=net: net.render(images, motion, motion)["prediction"], images,
                                           net.train().optimizer_groups()["generator"], steps=25)
              for name, net in (("plain", plain), ("skips", skips))}
    assert errors["skips"] < 0.6 * errors["plain"], errors


def test_warped_skips_are_the_masked_encoder_features_when_nothing_moves() -> None:
    torch.manual_seed(0)
    model = small_model(warped_skips=True).eval()
    source = torch.rand(1, 3, 64, 64)
    kp = random_kp(1, SMALL_KP)
    with torch.no_grad():
        still = model.render(source, {"value": kp}, {"value": kp})
        moved = model.render(source, {"value": kp}, {"value": kp + torch.tensor([0.3, 0.0, 0.0])})
        _, levels = model.appearance_feature_extractor.encode(source)
        flow = model.flow_2d(still["deformation"])
        occlusion = torch.nn.functional.interpolate(still["occlusion_map"], size=(64, 64), mode="bilinear",
                                                    align_corners=True)
        # identity deformation: the full-size skip is the encoder feature itself, masked by the occlusion map
        torch.testing.assert_close(warp_and_mask(levels[0], flow, still["occlusion_map"]), levels[0] * occlusion,
                                   atol=1e-5, rtol=1e-4)
    assert (moved["prediction"] - still["prediction"]).abs().mean() > 1e-3
    assert [type(p).__name__ for p in model.skip_projections] == ["Identity", "Identity"]


def test_warped_skips_project_mismatched_widths_and_reject_mismatched_levels() -> None:
    model = small_model()
    f, m, w = model.appearance_feature_extractor, model.motion_extractor, model.warping_network
    wide = SPADEDecoder(upscale=1, max_features=32, block_expansion=16, out_channels=24, num_down_blocks=2,
                        num_middle_blocks=1, spade_hidden=16)
    projected = LivePortraitModel(f, m, w, wide, warped_skips=True)
    assert [type(p).__name__ for p in projected.skip_projections] == ["Identity", "Conv2d"]
    group = projected.optimizer_groups()["generator"]
    assert all(any(p is q for q in group) for p in projected.skip_projections.parameters())
    assert projected(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))["prediction"].shape == (1, 3, 64, 64)
    shallow = SPADEDecoder(upscale=1, max_features=32, block_expansion=16, out_channels=16, num_down_blocks=1,
                           num_middle_blocks=1, spade_hidden=16)
    with pytest.raises(ValueError, match="warped_skips"):
        LivePortraitModel(f, m, w, shallow, warped_skips=True)


def test_warped_source_term_trains_the_motion_not_the_renderer() -> None:
    torch.manual_seed(0)
    model = small_model(warped_skips=True).train()
    objective = Objective(terms={"warped_source_l1": WarpedSourceL1(weight=10.0)})
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses = objective(LossContext(model, {"source": source, "driving": driving}, model(source, driving)))
    assert set(losses) == {"warped_source_l1"}
    losses["warped_source_l1"].backward()

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    # the flow comes from M's keypoints and W's dense-motion masks (which read F's volume); what renders the
    # image from the warped volume (W's output convs, G) never enters the warp
    assert grad_norm(model.motion_extractor) > 0
    assert grad_norm(model.warping_network.dense_motion_network) > 0
    assert grad_norm(model.warping_network.third) == grad_norm(model.warping_network.fourth) == 0
    assert grad_norm(model.spade_decoder) == 0


def test_decoder_blend_takes_visible_pixels_from_the_warped_source_and_exports_the_same() -> None:
    """``spade_decoder.blend_warped_source``: a mask saturated at 1 gives the source warped by the model's flow, at 0
    the decoder's image; the split rendering (what export runs) gives the same frames."""
    from hydra.utils import instantiate

    from reenact.utils.hydra_utils import compose_config

    cfg = compose_config("train", ["model=liveportrait_small", "model.network.spade_decoder.blend_warped_source=true",
                                   "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    torch.manual_seed(0)
    network = instantiate(cfg.model.network).eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    head = network.spade_decoder.blend.head
    torch.nn.init.zeros_(head.weight)
    for bias, expected in ((30.0, "deformed"), (-30.0, "decoder")):
        torch.nn.init.constant_(head.bias, bias)
        with torch.no_grad():
            out = network(source, driving)
            encoded = network.render_encoded(network.encode_source(source), out["motion_source"],
                                             out["motion_driving"])
            blend, network.spade_decoder.blend = network.spade_decoder.blend, None
            decoder = network(source, driving)["prediction"]
            network.spade_decoder.blend = blend
        target = out["deformed"] if expected == "deformed" else decoder
        torch.testing.assert_close(out["prediction"], target, atol=1e-6, rtol=0)
        torch.testing.assert_close(encoded, out["prediction"], atol=1e-6, rtol=0)
    released = compose_config("train", ["model=liveportrait", "model.network.spade_decoder.blend_warped_source=true",
                                        "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="needs upscale == 1"):
        instantiate(released.model.network.spade_decoder)
