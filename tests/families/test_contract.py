"""The contract every registered model family passes (reenact.families.base.ReenactmentFamily).

Parametrised over the registry and over every model preset in conf/model: a new family gets these checks by
registering itself and shipping a preset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import reenact.families
from reenact.errors import ReenactError
from reenact.families.base import (
    ReenactmentFamily,
    TransferModeError,
    get_family,
    parameters_may_go_unused,
    registered_families,
)
from reenact.layers.geometry import make_coordinate_grid
from reenact.losses.terms import LossContext
from reenact.utils.hydra_utils import CONFIG_DIR, compose_config, to_plain

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
FRAME = 64


def compose_model(preset: str):
    """``cfg.model`` of a preset, offline (no pretrained VGG download)."""
    cfg = compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    model = cfg.model
    with open_dict(model):
        for term in (model.objective.terms or {}).values():
            if term is not None and "vgg_pretrained" in term:
                term.vgg_pretrained = False
    return model


def build_task(preset: str):
    model = compose_model(preset)
    task = instantiate(model, _partial_=True)(model_config=to_plain(model), data_config={"frame_size": FRAME})
    return task, model


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def smallest_preset() -> dict[str, str]:
    """Each family's smallest preset (by network parameters): the one the behavioural checks run on."""
    best: dict[str, tuple[int, str]] = {}
    for preset in PRESETS:
        model = compose_model(preset)
        count = parameter_count(instantiate(model.network))
        if model.family not in best or count < best[model.family][0]:
            best[model.family] = (count, preset)
    return {family: preset for family, (_, preset) in best.items()}


# Every family the registry discovers, except the ones test modules define (the plug-in example family registers
# itself when its test module is imported, and has no preset)
FAMILIES = sorted(name for name, cls in registered_families().items() if cls.__module__.split(".")[0] != "tests")


@pytest.fixture(params=FAMILIES)
def family_task(request: pytest.FixtureRequest, smallest_preset: dict[str, str]):
    torch.manual_seed(0)
    task, model = build_task(smallest_preset[request.param])
    return task, model


def frames(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # smooth random images: a coarse field upsampled, so that detectors and warps see structure
    coarse = torch.rand(batch, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(FRAME, FRAME), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------- registry and presets
def test_every_family_folder_is_discovered_and_registered() -> None:
    families = registered_families()
    package = Path(reenact.families.__file__).parent
    folders = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    assert len(folders) >= 4 and set(FAMILIES) <= set(families)
    for folder in folders:  # each folder under reenact/families registers (at least) one family
        assert any(cls.__module__.startswith(f"reenact.families.{folder}.") for cls in families.values()), folder
    for name, cls in families.items():
        assert issubclass(cls, ReenactmentFamily) and cls.family == name


def test_an_unknown_family_is_one_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown model family 'nope'"):
        get_family("nope")


OUTSIDE_FAMILY = """
from reenact.families.base import ReenactmentFamily, register_family


@register_family
class Outside(ReenactmentFamily):
    family = "outside_example"
"""


def install_outside_package(root: Path, module_text: str) -> None:
    """What ``pip install`` of a package naming its family in the ``reenact.families`` entry-point group leaves."""
    (root / "outside_pkg").mkdir()
    (root / "outside_pkg" / "__init__.py").write_text(module_text)
    info = root / "outside_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[reenact.families]\noutside_example = outside_pkg\n")


def run_python(code: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=path)


def test_an_installed_package_adds_a_family_through_its_entry_point(tmp_path: Path) -> None:
    install_outside_package(tmp_path, OUTSIDE_FAMILY)
    done = run_python("from reenact.families.base import get_family; print(get_family('outside_example').__module__)",
                      tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "outside_pkg"


def test_a_broken_family_plug_in_is_one_line_naming_it(tmp_path: Path) -> None:
    install_outside_package(tmp_path, "import a_module_that_is_not_there\n")
    done = run_python("from reenact.families.base import FamilyPluginError, registered_families\n"
                      "try:\n    registered_families()\nexcept FamilyPluginError as exc:\n    print(exc)\n", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\n") == 1
    assert "'outside_example' (outside_pkg" in done.stdout and "a_module_that_is_not_there" in done.stdout


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_instantiates(preset: str) -> None:
    task, model = build_task(preset)
    assert task.network.family == model.family
    assert get_family(model.family) is type(task.network)
    assert (task.discriminator is not None) == task.objective.uses_discriminator
    assert set(task.optimizer_names) >= set(task.network.optimizer_groups())


def test_every_builtin_family_has_a_preset(smallest_preset: dict[str, str]) -> None:
    assert set(FAMILIES) <= set(smallest_preset)


# ------------------------------------------------------------------------------------------- behaviour
def test_output_keys_and_shapes(family_task) -> None:
    task, _ = family_task
    network = task.network.eval()
    source, driving = frames(2, 0), frames(2, 1)
    with torch.no_grad():
        out = network(source, driving)
    prediction = out["prediction"]
    assert prediction.shape[:2] == (2, 3) and prediction.shape[-1] % FRAME == 0
    for side in ("motion_source", "motion_driving"):
        motion = out[side]
        assert motion and all(v.shape[0] == 2 for v in motion.values())
    points = network.keypoints_2d(out["motion_driving"])
    if points is not None:
        assert points.shape[0] == 2 and points.shape[-1] == 2 and torch.isfinite(points).all()


def test_identity_motion_gives_the_identity_deformation(family_task) -> None:
    task, _ = family_task
    network = task.network.eval()
    source = frames(2, 3)
    with torch.no_grad():
        motion = network.encode_motion(source)
        out = network.render(source, motion, motion)
    deformation = out.get("deformation")
    if deformation is None:
        pytest.skip("this family has no deformation field")
    identity = make_coordinate_grid(tuple(deformation.shape[1:-1]))
    torch.testing.assert_close(deformation, identity.expand_as(deformation), atol=1e-5, rtol=0)
    if out.get("deformed") is not None:
        torch.testing.assert_close(out["deformed"], source, atol=1e-4, rtol=0)


def test_parameter_groups_partition_the_parameters(family_task) -> None:
    task, _ = family_task
    groups = task.network.optimizer_groups()
    seen = [id(p) for params in groups.values() for p in params]
    assert len(seen) == len(set(seen)), "a parameter is in two groups"
    assert set(seen) == {id(p) for p in task.network.parameters()}


def test_transfer_modes_are_declared_and_refused_in_one_line(family_task) -> None:
    """Every mode a family declares transfers (or, for a mode that needs a network this model has not trained yet,
    is refused in one line naming the mode); any other mode or option is refused in one line, the same way for
    every caller (animation, the API, export). The default mode always transfers."""
    task, _ = family_task
    network = task.network.eval()
    with torch.no_grad():
        motion = network.compact_motion(network.encode_motion(frames(1, 4)))
    assert network.transfer_modes and len(set(network.transfer_modes)) == len(network.transfer_modes)
    with torch.no_grad():
        for mode in network.transfer_modes:
            try:
                moved = network.transfer(motion, motion, motion, mode)
            except ReenactError as error:
                assert mode != network.transfer_modes[0] and "\n" not in str(error) and mode in str(error)
                continue
            assert moved and all(torch.isfinite(v).all() for v in moved.values())
    for mode, options in (("sideways", {}), (None, {"no_such_option": 1})):
        with pytest.raises(TransferModeError) as error:
            network.transfer(motion, motion, motion, mode, **options)
        assert "\n" not in str(error.value) and network.family in str(error.value)


def test_declared_flow_and_equivariance_keypoints_match_the_outputs(family_task) -> None:
    task, _ = family_task
    network = task.network.eval()
    with torch.no_grad():
        out = network(frames(2, 0), frames(2, 1))
    deformation = out.get("deformation")
    has_flow = deformation is not None and deformation.dim() == 4 and deformation.shape[-1] == 2
    assert network.renders_2d_flow == has_flow
    keypoints = network.equivariance_keypoints(out["motion_driving"])
    if network.keypoints_2d(out["motion_driving"]) is None:
        assert keypoints is None
    else:
        points, jacobian = keypoints
        assert points.shape[0] == 2 and points.shape[-1] == 2
        assert jacobian is None or jacobian.shape == (*points.shape[:2], 2, 2)


def test_unused_parameter_search_follows_the_declared_and_staged_groups(family_task) -> None:
    task, _ = family_task
    network = task.network
    group = next(iter(network.optimizer_groups()))
    expected = network.may_skip_parameters
    assert parameters_may_go_unused(network, {}, has_discriminator=False) == expected
    assert parameters_may_go_unused(network, {}, has_discriminator=True)
    assert parameters_may_go_unused(network, {group: {"start_epoch": 1}}, has_discriminator=False)
    assert parameters_may_go_unused(network, {group: {"frozen": True}}, has_discriminator=False)
    assert parameters_may_go_unused(network, {group: {"start_epoch": 0}}, has_discriminator=False) == expected


def test_relative_transfer_with_reference_equal_to_source_returns_the_source_motion(family_task) -> None:
    task, _ = family_task
    network = task.network.eval()
    source = frames(1, 4)
    with torch.no_grad():
        motion = network.compact_motion(network.encode_motion(source))
        # relative motion where the family has it, else its default (absolute transfer of the same frame)
        moved = network.transfer(motion, motion, motion, "relative" if "relative" in network.transfer_modes else None)
        direct = network.render(source, motion, motion)["prediction"]
        transferred = network.render(source, motion, moved)["prediction"]
    for key, value in moved.items():
        if key in motion:
            torch.testing.assert_close(value, motion[key], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(transferred, direct, atol=1e-5, rtol=0)


def test_checkpoint_round_trip_gives_identical_outputs(family_task, tmp_path: Path) -> None:
    import reenact

    task, _ = family_task
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)
    loaded = reenact.load_pretrained(path)
    assert loaded.family == task.network.family and loaded.frame_size == FRAME
    source, driving = frames(2, 5), frames(2, 6)
    task.network.eval()
    with torch.no_grad():
        expected = task.network(source, driving)["prediction"]
    assert torch.equal(loaded.reconstruct(source, driving)["prediction"], expected)
    animated = loaded.animate(source[0], driving, reference_frame="best")  # the family's default transfer mode
    assert animated.shape[0] == 2 and torch.isfinite(animated).all()

    # the evaluation entry point's reconstruction protocol on a folder holding one clip
    from reenact.cli.evaluate import evaluate
    from reenact.data.video_writer import write_video

    clips = tmp_path / "clips"
    clips.mkdir()
    video = torch.cat([source, driving]).permute(0, 2, 3, 1).mul(255).round().byte().numpy()
    write_video(clips / "clip.mp4", video, fps=10)
    cfg = compose_config("evaluate", [f"ckpt_path={path}", "data=folder", f"data.root={clips}",
                                      f"paths.output_dir={tmp_path / 'eval'}", "metrics.names=[l1]"])
    payload = evaluate(cfg)
    assert payload["counts"]["videos"] == 1 and payload["overall"]["l1"] >= 0


def test_one_optimisation_step_lowers_the_loss(family_task) -> None:
    task, _ = family_task
    network, objective = task.network.train(), task.objective
    batch = {"source": frames(2, 7), "driving": frames(2, 8)}
    # a small first step: Adam's first update moves every weight by about lr, and at 1e-4 the summed move of a wide
    # 7x7 head (FOMM's warped-source blend) overshoots on this one batch
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-5)

    def loss() -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same equivariance transform both times
            output = network.training_forward(batch)
            return sum(objective(LossContext(network, batch, output)).values())

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = loss()
    assert after.item() < before.item()


def test_model_config_travels_in_the_checkpoint(family_task) -> None:
    task, model = family_task
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    stored = checkpoint["reenact"]
    assert stored["family"] == model.family
    assert OmegaConf.create(stored["model_config"]).network._target_ == model.network._target_


def test_a_family_without_keypoints_draws_and_conditions_on_nothing(family_task) -> None:
    """keypoints_2d None: no discriminator condition, visuals without points, reference frame 0."""
    from reenact.callbacks.visualizer import ReconstructionVisualizer

    task, _ = family_task
    network = task.network.eval()
    source, driving = frames(2, 9), frames(2, 10)
    with torch.no_grad():
        out = network(source, driving)
    if network.keypoints_2d(out["motion_driving"]) is not None:
        pytest.skip("this family has keypoints")
    batch = {"source": source, "driving": driving}
    assert LossContext(network, batch, out).discriminator_condition() is None
    drawn = ReconstructionVisualizer.frames_with_points(network, driving, out["motion_driving"])
    assert all((image == ReconstructionVisualizer.frames_with_points(network, driving, None)[i]).all()
               for i, image in enumerate(drawn))
    motion = network.compact_motion(out["motion_driving"])
    assert network.best_reference_frame({k: v[:1] for k, v in motion.items()}, motion) == 0


def test_rendering_from_the_source_encoding_equals_render(family_task) -> None:
    """``encode_source`` + ``render_encoded`` (what ONNX export splits rendering into) give ``render``'s prediction."""
    task, _ = family_task
    network = task.network.eval()
    source, driving = frames(2, 0), frames(2, 1)
    with torch.no_grad():
        source_motion = network.compact_motion(network.encode_motion(source))
        driving_motion = network.compact_motion(network.encode_motion(driving))
        expected = network.render(source, source_motion, driving_motion)["prediction"]
        encoding = network.encode_source(source)
        assert encoding and all(v.shape[0] == 2 for v in encoding.values())
        got = network.render_encoded(encoding, source_motion, driving_motion)
    assert torch.allclose(got, expected, atol=1e-6)
