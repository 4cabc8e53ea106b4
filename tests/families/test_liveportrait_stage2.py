"""LivePortrait's second stage: the stitching and eye/lip retargeting networks (sizes, zero start, the released file's
key layout and values), their use in animation, and stage-2 training with stage 1 frozen.

The released ``stitching_retargeting_module.pth`` cannot be downloaded here: the fixture writes one in the release's
layout (three state dicts of ``mlp.<i>.weight/bias``, Linear layers at even indices, sizes from the reference notes)
with random values, and the networks' outputs are compared with a plain evaluation of those tensors.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reenact.api import load_pretrained, read_checkpoint
from reenact.convert.keymap import ConversionError
from reenact.families.liveportrait.convert import convert_liveportrait
from reenact.families.liveportrait.eye_retargeting_network import EyeRetargetingNetwork
from reenact.families.liveportrait.lip_retargeting_network import LipRetargetingNetwork
from reenact.families.liveportrait.losses import RetargetingTarget, SecondStageOffset, SecondStageRegion
from reenact.families.liveportrait.ratios import LandmarkLayoutError, eye_ratios, lip_ratio
from reenact.families.liveportrait.stitching_network import StitchingNetwork
from reenact.losses.terms import LossContext
from reenact.utils.hydra_utils import compose_config
from tests.helpers.configs import CHEAP_RUN
from tests.test_convert import liveportrait_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
# released (input, hidden..., output) of each MLP for K keypoints (reference notes, section 1.3)
RELEASED = {
    "retarget_shoulder": lambda k: (6 * k, 128, 128, 64, 3 * k + 2),
    "retarget_eye": lambda k: (3 * k + 3, 256, 256, 128, 128, 64, 3 * k),
    "retarget_mouth": lambda k: (3 * k + 2, 128, 128, 64, 3 * k),
}
NETWORK_OF = {"retarget_shoulder": "stitching_network", "retarget_eye": "eye_retargeting_network",
              "retarget_mouth": "lip_retargeting_network"}


def released_state(widths: tuple[int, ...], gen: torch.Generator, prefix: str = "") -> dict[str, torch.Tensor]:
    """An MLP state dict in the release's layout: Linear i at ``mlp.{2 i}`` (ReLUs between take the odd indices)."""
    state = {}
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        state[f"{prefix}mlp.{2 * i}.weight"] = torch.randn(cout, cin, generator=gen) / math.sqrt(cin)
        state[f"{prefix}mlp.{2 * i}.bias"] = 0.1 * torch.randn(cout, generator=gen)
    return state


def plain_mlp(state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """The MLP evaluated from its tensors alone: linear, ReLU, ..., linear."""
    count = len(state) // 2
    x = features.double()
    for i in range(count):
        x = x @ state[f"mlp.{2 * i}.weight"].double().T + state[f"mlp.{2 * i}.bias"].double()
        if i < count - 1:
            x = x.clamp_min(0)
    return x


def retargeting_file(folder: Path, num_kp: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``folder/retargeting_models/stitching_retargeting_module.pth`` with random weights; the eye network's keys
    carry DDP's ``module.`` prefix, as some released copies do. Returns the unprefixed states."""
    gen = torch.Generator().manual_seed(seed)
    states = {key: released_state(widths(num_kp), gen) for key, widths in RELEASED.items()}
    stored = {key: {("module." + k if key == "retarget_eye" else k): v for k, v in state.items()}
              for key, state in states.items()}
    (folder / "retargeting_models").mkdir(parents=True, exist_ok=True)
    torch.save(stored, folder / "retargeting_models" / "stitching_retargeting_module.pth")
    return states


def small_network(*overrides: str) -> torch.nn.Module:
    from hydra.utils import instantiate

    cfg = compose_config("train", ["model=liveportrait_small", "paths.root_dir=/tmp", "paths.output_dir=/tmp",
                                   *overrides])
    return instantiate(cfg.model.network).eval()


# --- the networks -------------------------------------------------------------------------------------------
def test_released_sizes_and_key_layout() -> None:
    networks = {"retarget_shoulder": StitchingNetwork(), "retarget_eye": EyeRetargetingNetwork(),
                "retarget_mouth": LipRetargetingNetwork()}
    counts = {key: sum(p.numel() for p in net.parameters()) for key, net in networks.items()}
    assert counts == {"retarget_shoulder": 45_249, "retarget_eye": 144_703, "retarget_mouth": 37_311}
    for key, net in networks.items():
        layout = {k: tuple(v.shape) for k, v in released_state(RELEASED[key](21), torch.Generator()).items()}
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout


def test_info_lists_the_second_stage_beside_the_unchanged_first() -> None:
    from reenact.cli.info import parameter_table

    rows = {name: count for name, _, count in parameter_table(["model=liveportrait"])}
    assert {name: rows[name] for name in ("appearance_feature_extractor", "motion_extractor", "warping_network",
                                          "spade_decoder", "stitching_network", "eye_retargeting_network",
                                          "lip_retargeting_network")} == {
        "appearance_feature_extractor": 836_224, "motion_extractor": 28_118_728, "warping_network": 45_529_829,
        "spade_decoder": 55_365_388, "stitching_network": 45_249, "eye_retargeting_network": 144_703,
        "lip_retargeting_network": 37_311}


def test_new_networks_are_the_identity_and_can_learn() -> None:
    network = small_network()
    gen = torch.Generator().manual_seed(1)
    source, driving = torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        kp_s, kp_d = network.encode_motion(source), network.encode_motion(driving)
        controls = {"stitching": torch.ones(2, 1), "eye_condition": torch.rand(2, 3, generator=gen),
                    "eye_weight": torch.ones(2, 1), "lip_condition": torch.rand(2, 2, generator=gen),
                    "lip_weight": torch.ones(2, 1)}
        plain = network.render(source, kp_s, kp_d)["prediction"]
        controlled = network.render(source, kp_s, {**kp_d, **controls})["prediction"]
    assert torch.equal(network.retargeted_keypoints(kp_s, {**kp_d, **controls}), kp_d["value"])
    assert torch.equal(plain, controlled)
    # only the last layer starts at zero: a gradient step moves the output (an all-zero MLP could not learn)
    stitching = network.stitching_network
    offset, shift = stitching.delta(kp_s["value"], kp_d["value"])
    (offset.sum() + shift.sum()).backward()
    assert stitching.mlp[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        stitching.mlp[-1].weight -= 0.1 * stitching.mlp[-1].weight.grad
    moved = network.retargeted_keypoints(kp_s, {**kp_d, "stitching": torch.ones(2, 1)})
    assert not torch.equal(moved, kp_d["value"])


def test_retargeting_runs_in_the_renderer_on_its_control_entries() -> None:
    network = small_network()
    gen = torch.Generator().manual_seed(2)
    for net in network.second_stage_networks().values():
        torch.nn.init.normal_(net.mlp[-1].weight, std=0.05, generator=gen)
    source = torch.rand(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        kp = network.encode_motion(source)
        x_s = kp["value"]
        off = {"stitching": torch.zeros(1, 1), "eye_condition": torch.rand(1, 3, generator=gen),
               "eye_weight": torch.zeros(1, 1), "lip_condition": torch.rand(1, 2, generator=gen),
               "lip_weight": torch.zeros(1, 1)}
        assert torch.equal(network.retargeted_keypoints(kp, {**kp, **off}), x_s)  # weights 0: nothing changes
        eye = network.retargeted_keypoints(kp, {**kp, **off, "eye_weight": torch.ones(1, 1)})
        expected = x_s + network.eye_retargeting_network.delta(x_s, off["eye_condition"])
        torch.testing.assert_close(eye, expected, rtol=0, atol=0)
        both = network.retargeted_keypoints(kp, {**kp, **off, "lip_weight": torch.ones(1, 1),
                                                 "stitching": torch.ones(1, 1)})
        lipped = x_s + network.lip_retargeting_network.delta(x_s, off["lip_condition"])
        torch.testing.assert_close(both, network.stitching_network.stitch(x_s, lipped), rtol=0, atol=0)
        encoding = network.encode_source(source)
        a = network.render_encoded(encoding, kp, {**kp, **off})
        b = network.render_encoded(encoding, kp, {**kp, **off, "eye_weight": torch.ones(1, 1)})
    assert (a - b).abs().max() > 0  # the offset reaches W


def test_ratios_from_68_and_synthetic_landmarks() -> None:
    points = torch.zeros(1, 68, 2)
    points[0, 36], points[0, 39] = torch.tensor([0.0, 0.0]), torch.tensor([4.0, 0.0])  # eye width 4
    points[0, 37], points[0, 41] = torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])  # opening 2
    points[0, 38], points[0, 40] = torch.tensor([3.0, -0.5]), torch.tensor([3.0, 0.5])  # opening 1
    points[0, 42], points[0, 45] = torch.tensor([6.0, 0.0]), torch.tensor([10.0, 0.0])
    points[0, 48], points[0, 54] = torch.tensor([2.0, 5.0]), torch.tensor([8.0, 5.0])  # mouth width 6
    points[0, 61:64] = torch.tensor([[4.0, 4.0], [5.0, 4.0], [6.0, 4.0]])
    points[0, 65:68] = torch.tensor([[6.0, 7.0], [5.0, 7.0], [4.0, 7.0]])  # opening 3
    torch.testing.assert_close(eye_ratios(points), torch.tensor([[0.375, 0.0]]))
    torch.testing.assert_close(lip_ratio(points), torch.tensor([[0.5]]))
    synthetic = torch.zeros(1, 16, 2)
    synthetic[0, 0, 0], synthetic[0, 1, 0], synthetic[0, 3, 1] = -2.0, 2.0, 1.0  # width 4, opening 1
    synthetic[0, 5, 0] = 1.0
    assert eye_ratios(synthetic)[0, 0].item() == pytest.approx(0.25)
    with pytest.raises(LandmarkLayoutError, match="68 iBUG"):
        eye_ratios(torch.zeros(1, 5, 2))


# --- conversion ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("release")
    liveportrait_folder(root / "liveportrait" / "base_models")
    states = retargeting_file(root / "liveportrait", num_kp=10)
    return root, states


def test_converted_second_stage_equals_the_released_mlps(release: tuple[Path, dict], tmp_path: Path) -> None:
    root, states = release
    report = convert_liveportrait(root, tmp_path / "lp.ckpt", preset="liveportrait_small", frame_size=64)
    assert any("stitching and eye/lip retargeting converted" in note for note in report.notes)
    stored = read_checkpoint(tmp_path / "lp.ckpt")["state_dict"]
    for key, state in states.items():
        for name, value in state.items():
            assert torch.equal(stored[f"network.{NETWORK_OF[key]}.{name}"], value)
    network = load_pretrained(tmp_path / "lp.ckpt").network
    gen = torch.Generator().manual_seed(5)
    x_s, x_d = torch.randn(4, 10, 3, generator=gen), torch.randn(4, 10, 3, generator=gen)
    eye, lip = torch.rand(4, 3, generator=gen), torch.rand(4, 2, generator=gen)
    with torch.no_grad():
        offset, shift = network.stitching_network.delta(x_s, x_d)
        stitched = network.stitching_network.stitch(x_s, x_d)
        got = {"retarget_shoulder": torch.cat([offset.reshape(4, -1), shift], 1),
               "retarget_eye": network.eye_retargeting_network.delta(x_s, eye).reshape(4, -1),
               "retarget_mouth": network.lip_retargeting_network.delta(x_s, lip).reshape(4, -1)}
    inputs = {"retarget_shoulder": torch.cat([x_s.reshape(4, -1), x_d.reshape(4, -1)], 1),
              "retarget_eye": torch.cat([x_s.reshape(4, -1), eye], 1),
              "retarget_mouth": torch.cat([x_s.reshape(4, -1), lip], 1)}
    for key in RELEASED:
        torch.testing.assert_close(got[key].double(), plain_mlp(states[key], inputs[key]), rtol=0, atol=1e-6)
    # the release's stitching: the first 3K outputs offset the driving keypoints, the last two shift their x, y
    expected = plain_mlp(states["retarget_shoulder"], inputs["retarget_shoulder"])
    by_hand = x_d.double() + expected[:, :30].reshape(4, 10, 3)
    by_hand[..., :2] += expected[:, 30:][:, None]
    torch.testing.assert_close(stitched.double(), by_hand, rtol=0, atol=1e-6)


def test_second_stage_file_is_read_strictly(release: tuple[Path, dict], tmp_path: Path) -> None:
    root, states = release
    path = root / "liveportrait" / "retargeting_models" / "stitching_retargeting_module.pth"
    original = torch.load(path, weights_only=True)
    try:
        for edit, message in (
            (lambda obj: obj["retarget_eye"].pop("module.mlp.10.bias"), "missing"),
            (lambda obj: obj["retarget_mouth"].__setitem__("mlp.7.weight", torch.zeros(1)), "unexpected"),
            (lambda obj: obj.__setitem__("retarget_nose", {}), "unknown"),
            (lambda obj: obj.pop("retarget_shoulder"), "missing"),
            (lambda obj: obj["retarget_mouth"].__setitem__("mlp.0.weight", torch.zeros(128, 3)), "shape"),
        ):
            broken = {key: dict(state) for key, state in original.items()}
            edit(broken)
            torch.save(broken, path)
            with pytest.raises(ConversionError, match=message) as info:
                convert_liveportrait(root, tmp_path / "bad.ckpt", preset="liveportrait_small", frame_size=64)
            assert "\n" not in str(info.value)
            assert not (tmp_path / "bad.ckpt").exists()
    finally:
        torch.save(original, path)


def test_a_folder_without_the_second_stage_converts_without_it(tmp_path: Path) -> None:
    liveportrait_folder(tmp_path / "liveportrait" / "base_models")
    report = convert_liveportrait(tmp_path, tmp_path / "lp.ckpt", preset="liveportrait_small", frame_size=64)
    off = [line for line in report.lines() if "stitching and retargeting are off" in line]
    assert len(off) == 1
    model = load_pretrained(tmp_path / "lp.ckpt")
    assert not model.network.second_stage_networks()
    assert "retargeting" not in model.network.optimizer_groups()
    stored = read_checkpoint(tmp_path / "lp.ckpt")["state_dict"]
    assert not any("retarget" in key or "stitching" in key for key in stored)


# --- stage-2 losses -----------------------------------------------------------------------------------------
def stage2_batch(gen: torch.Generator, count: int = 3) -> dict[str, torch.Tensor]:
    from reenact.data.synthetic_scene import LANDMARK_NAMES

    landmarks = torch.rand(count, len(LANDMARK_NAMES), 2, generator=gen) * 1.2 - 0.6
    return {"source": torch.rand(count, 3, 64, 64, generator=gen),
            "driving": torch.rand(count, 3, 64, 64, generator=gen), "source_landmarks": landmarks,
            "driving_landmarks": landmarks + 0.05 * torch.randn(landmarks.shape, generator=gen)}


STAGE2_TERMS = {
    "stitching_region": SecondStageRegion(10.0, "stitching"), "stitching_offset": SecondStageOffset(1.0, "stitching"),
    "eye_target": RetargetingTarget(10.0, "eye"), "eye_region": SecondStageRegion(10.0, "eye"),
    "eye_offset": SecondStageOffset(0.1, "eye"), "lip_target": RetargetingTarget(10.0, "lip"),
    "lip_region": SecondStageRegion(10.0, "lip"), "lip_offset": SecondStageOffset(0.1, "lip"),
}


def test_stage2_losses_fall_and_stage1_gets_no_gradient() -> None:
    network = small_network("model.network.training_stage=2")
    batch = stage2_batch(torch.Generator().manual_seed(3))
    groups = network.optimizer_groups()
    for name in ("motion_extractor", "generator"):
        for parameter in groups[name]:
            parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(groups["retargeting"], lr=1e-3)
    history = []
    for _ in range(12):
        output = network.training_forward(batch)
        context = LossContext(network, batch, output)
        losses = {name: term(context)[""] for name, term in STAGE2_TERMS.items()}
        history.append({k: v.item() for k, v in losses.items()})
        optimizer.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()
    total = [sum(step.values()) for step in history]
    assert total[-1] < total[0]
    for name in ("stitching_region", "eye_target", "lip_target"):
        assert history[-1][name] < history[0][name], (name, history[0][name], history[-1][name])
    for name in ("eye_region", "lip_region"):  # the rest of the face stays: the identity start is near its minimum
        assert abs(history[-1][name] - history[0][name]) < 0.02 * history[0][name]
    assert history[0]["stitching_offset"] == 0.0 < history[-1]["stitching_offset"]
    assert all(p.grad is None for name in ("motion_extractor", "generator") for p in groups[name])


def test_retargeting_without_landmarks_fails_in_one_line() -> None:
    network = small_network("model.network.training_stage=2")
    batch = stage2_batch(torch.Generator().manual_seed(4))
    del batch["driving_landmarks"]
    with pytest.raises(ValueError, match="needs source_landmarks and driving_landmarks") as info:
        network.training_forward(batch)
    assert "\n" not in str(info.value)


# --- training -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny liveportrait_small first stage; returns its last checkpoint and the synthetic-data cache."""
    from reenact.cli.train import run
    from tests.helpers.configs import train_config

    root = tmp_path_factory.mktemp("stage1")
    cfg = train_config(root / "run", root / "cache", ["model=liveportrait_small", "trainer.limit_train_batches=1",
                                                      "trainer.limit_val_batches=0",
                                                      "callbacks.reconstruction_visualizer.every_n_epochs=100"])
    run(cfg)
    return root / "run" / "checkpoints" / "last.ckpt", root / "cache"


def test_stage2_run_keeps_stage1_bit_identical(stage1_run: tuple[Path, Path], tmp_path: Path) -> None:
    stage1, cache = stage1_run
    command = [sys.executable, "train.py", "experiment=liveportrait_stage2", f"model.init_from={stage1}",
               *CHEAP_RUN, "trainer.limit_train_batches=2", "trainer.max_epochs=2", "trainer.limit_val_batches=0",
               "callbacks.reconstruction_visualizer.every_n_epochs=100", "logger=[]",
               f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    before = read_checkpoint(stage1)["state_dict"]
    after = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    assert set(before) == set(after)
    second = [k for k in after if k.split(".")[1] in NETWORK_OF.values()]
    first = [k for k in after if k not in second]
    assert any("running_mean" in k for k in first)  # BatchNorm statistics are among the compared tensors
    assert [k for k in first if not torch.equal(before[k], after[k])] == []
    assert any(not torch.equal(before[k], after[k]) for k in second)


# --- animation ----------------------------------------------------------------------------------------------
def trained_looking(network: torch.nn.Module, seed: int = 7) -> torch.nn.Module:
    """The network with random last layers in its second stage (as after training: offsets no longer zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in network.second_stage_networks().values():
            net.mlp[-1].weight.copy_(0.05 * torch.randn(net.mlp[-1].weight.shape, generator=gen))
    return network


def face_landmarks(count: int, eye_open: float, mouth_open: float) -> torch.Tensor:
    """(count, 68, 2) iBUG points of a frontal face whose eyes and inner lips open by the given amounts."""
    points = torch.zeros(count, 68, 2)
    for corners, lids in (((36, 39), (37, 38, 41, 40)), ((42, 45), (43, 44, 47, 46))):
        x0 = -0.4 if corners[0] == 36 else 0.1
        points[:, corners[0]] = torch.tensor([x0, -0.2])
        points[:, corners[1]] = torch.tensor([x0 + 0.3, -0.2])
        for i, lid in enumerate(lids):
            half = eye_open / 2 if i >= 2 else -eye_open / 2  # upper lids first, then the lower ones
            points[:, lid] = torch.tensor([x0 + 0.1 + 0.1 * (i % 2), -0.2 + half])
    points[:, 48], points[:, 54] = torch.tensor([-0.25, 0.4]), torch.tensor([0.25, 0.4])
    for upper, lower, x in ((61, 67, -0.1), (62, 66, 0.0), (63, 65, 0.1)):
        points[:, upper] = torch.tensor([x, 0.4 - mouth_open / 2])
        points[:, lower] = torch.tensor([x, 0.4 + mouth_open / 2])
    return points


def test_stitching_is_on_when_pasted_back_unless_switched_off() -> None:
    from reenact.animation.pipeline import animate_frames

    network = trained_looking(small_network())
    gen = torch.Generator().manual_seed(8)
    source, driving = torch.rand(3, 64, 64, generator=gen), torch.rand(3, 3, 64, 64, generator=gen)
    default = animate_frames(network, source, driving)
    pasted = animate_frames(network, source, driving, paste_back=True)
    assert torch.equal(animate_frames(network, source, driving, paste_back=True, stitching=False), default)
    assert torch.equal(animate_frames(network, source, driving, stitching=True), pasted)
    assert (pasted - default).abs().max() > 1e-4
    off = small_network("model.network.stitching_network=null", "~model.groups.retargeting")
    with pytest.raises(ValueError, match="stitching needs the LivePortrait stitching network") as info:
        animate_frames(off, source, driving, stitching=True)
    assert "\n" not in str(info.value)


def test_eye_and_lip_retargeting_controls() -> None:
    network = trained_looking(small_network())
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        source = network.compact_motion(network.encode_motion(torch.rand(1, 3, 64, 64, generator=gen)))
        driving = network.compact_motion(network.encode_motion(torch.rand(3, 3, 64, 64, generator=gen)))
    source["landmarks"] = face_landmarks(1, eye_open=0.09, mouth_open=0.05)
    driving["landmarks"] = torch.cat([face_landmarks(1, 0.03, 0.2), face_landmarks(1, 0.12, 0.0),
                                      torch.full((1, 68, 2), float("nan"))])
    reference = {k: v[:1] for k, v in driving.items()}
    plain = network.transfer(source, driving, reference)
    assert torch.equal(plain["eye_weight"], torch.zeros(3, 1)) and torch.equal(plain["lip_weight"], torch.zeros(3, 1))
    assert torch.equal(plain["stitching"], torch.zeros(3, 1))
    fixed = network.transfer(source, driving, reference, eye_ratio=0.1)
    torch.testing.assert_close(fixed["eye_condition"], torch.tensor([[0.3, 0.3, 0.1]]).expand(3, 3))
    assert torch.equal(fixed["eye_weight"], torch.ones(3, 1))
    follow = network.transfer(source, driving, reference, eye_ratio="driving", lip_ratio="driving")
    torch.testing.assert_close(follow["eye_condition"][:2, 2], torch.tensor([0.1, 0.4]))
    torch.testing.assert_close(follow["lip_condition"][:2], torch.tensor([[0.1, 0.4], [0.1, 0.0]]))
    assert follow["eye_weight"].flatten().tolist() == [1.0, 1.0, 0.0]  # no landmarks in the last frame: not moved
    closed = network.transfer(source, driving, reference, lip_normalize=True)
    torch.testing.assert_close(closed["lip_condition"], torch.tensor([[0.1, 0.0]]).expand(3, 2))
    assert network.transfer_needs_landmarks({"lip_normalize": True})
    assert not network.transfer_needs_landmarks({"stitching": True, "paste_back": True})
    with torch.no_grad():
        encoding = network.encode_source(torch.rand(1, 3, 64, 64, generator=gen))
        encoding = {k: v.expand(3, *v.shape[1:]) for k, v in encoding.items()}
        source_b = {k: v.expand(3, *v.shape[1:]) for k, v in source.items() if k != "landmarks"}
        renders = [network.render_encoded(encoding, source_b, moved) for moved in (plain, fixed, closed)]
    assert (renders[1] - renders[0]).abs().max() > 1e-4 and (renders[2] - renders[0]).abs().max() > 1e-4
    for options, message in (({"lip_ratio": 0.2, "lip_normalize": True}, "give one of them"),
                             ({"eye_ratio": "open"}, "give a number or 'driving'"),
                             ({"eye_ratio": -1.0}, "non-negative")):
        with pytest.raises(ValueError, match=message):
            network.transfer(source, driving, reference, **options)
    without = {k: v for k, v in source.items() if k != "landmarks"}
    with pytest.raises(ValueError, match="source's facial landmarks"):
        network.transfer(without, driving, reference, eye_ratio=0.2)


def test_exported_renderer_applies_stitching_and_retargeting(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from reenact.animation.pipeline import animate_frames
    from reenact.export.exporter import export_model
    from reenact.export.onnx_backend import load_exported
    from reenact.utils.hydra_utils import to_plain

    network = trained_looking(small_network())
    cfg = compose_config("train", ["model=liveportrait_small", "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    export_model(network, 64, tmp_path / "onnx", to_plain(cfg.model))
    gen = torch.Generator().manual_seed(10)
    source, driving = torch.rand(3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)
    exported = load_exported(tmp_path / "onnx")
    for options in ({}, {"paste_back": True}):
        expected = animate_frames(network, source, driving, **options)
        torch.testing.assert_close(exported.animate(source, driving, **options), expected, rtol=0, atol=1e-4)


def test_animate_cli_retargets_a_real_portrait(stage1_run: tuple[Path, Path], tmp_path: Path,
                                               faces_dir: Path) -> None:
    from reenact.cli.animate import run as animate_run
    from reenact.data.video import iter_frames

    checkpoint = read_checkpoint(stage1_run[0])
    gen = torch.Generator().manual_seed(11)
    for key in ("network.eye_retargeting_network.mlp.10.weight", "network.lip_retargeting_network.mlp.6.weight"):
        checkpoint["state_dict"][key] = 0.05 * torch.randn(checkpoint["state_dict"][key].shape, generator=gen)
    ckpt = tmp_path / "retargeting.ckpt"
    torch.save(checkpoint, ckpt)

    def animate(name: str, *overrides: str) -> list:
        cfg = compose_config("animate", [f"ckpt_path={ckpt}", f"source={faces_dir / 's0.jpg'}",
                                         f"driving={faces_dir / 'd0.mp4'}", f"output={tmp_path / name}",
                                         f"paths.output_dir={tmp_path}", "progress=false", "device=cpu",
                                         "max_frames=3", *overrides])
        animate_run(cfg)
        return [frame.astype(float) for frame in iter_frames(tmp_path / name)]

    plain = animate("plain.mp4")
    eyes = animate("eyes.mp4", "+transfer_options.eye_ratio=0.05", "+transfer_options.lip_normalize=true")
    assert len(plain) == len(eyes) == 3
    assert max(abs(a - b).mean() for a, b in zip(plain, eyes, strict=True)) > 0.5
