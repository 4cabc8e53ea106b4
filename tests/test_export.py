"""ONNX export and onnxruntime animation: every graph and a whole clip equal PyTorch's within 1e-4, the batch is
dynamic, the manifest round-trips, broken export directories and unexportable families are one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from reenact.api import load_pretrained  # noqa: E402
from reenact.export.exporter import export_model  # noqa: E402
from reenact.export.graphs import GRAPH_NAMES, example_inputs, graph_modules  # noqa: E402
from reenact.export.manifest import ExportDirError, ExportError, Manifest, read_manifest  # noqa: E402
from reenact.export.onnx_backend import load_exported  # noqa: E402
from reenact.families.base import ReenactmentFamily  # noqa: E402
from reenact.utils.hydra_utils import compose_config  # noqa: E402

TOLERANCE = 1e-4
FRAME_SIZE = 64  # the CPU presets' size
PRESETS = ["fomm", "liveportrait_small"]  # one per exportable built-in family


def random_checkpoint(preset: str, path: Path) -> Path:
    """A checkpoint as training writes it, with the preset's random initial weights."""
    cfg = compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    network = instantiate(cfg.model.network).eval()
    torch.save({"state_dict": {f"network.{k}": v for k, v in network.state_dict().items()},
                "reenact": {"family": network.family, "model_config": OmegaConf.to_container(cfg.model, resolve=True),
                            "data_config": {"frame_size": FRAME_SIZE}}}, path)
    return path


@pytest.fixture(scope="module", params=PRESETS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export directory), written through the CLI's run(cfg)."""
    from reenact.cli.export import run

    root = tmp_path_factory.mktemp(request.param)
    ckpt = random_checkpoint(request.param, root / "model.ckpt")
    cfg = compose_config("export", [f"ckpt_path={ckpt}", f"output={root / 'onnx'}", f"paths.output_dir={root}"])
    run(cfg)
    return ckpt, root / "onnx"


def test_every_graph_equals_pytorch_at_batch_1_and_5(exported: tuple[Path, Path]) -> None:
    ckpt, directory = exported
    manifest = read_manifest(directory)
    assert set(manifest.verified_max_abs_diff) == set(GRAPH_NAMES)
    assert max(manifest.verified_max_abs_diff.values()) <= TOLERANCE  # batch 3, checked when exported
    network = load_pretrained(ckpt).network
    onnx_network = load_exported(directory).network
    for batch in (1, 5):
        keys, inputs = example_inputs(network, FRAME_SIZE, max(batch, 2), seed=batch)
        inputs = {name: tuple(t[:batch] for t in tensors) for name, tensors in inputs.items()}
        modules = graph_modules(network, keys)
        for name in GRAPH_NAMES:
            entry = manifest.graphs[name]
            session = onnx_network.sessions[name]
            feeds = dict(zip(entry.inputs, (t.numpy() for t in inputs[name]), strict=True))
            got = session.run(None, {spec.name: feeds[spec.name] for spec in session.get_inputs()})
            with torch.no_grad():
                expected = modules[name](*inputs[name])
            expected = expected if isinstance(expected, tuple) else (expected,)
            assert got[0].shape[0] == batch
            diff = max(float(abs(torch.from_numpy(g) - e).max()) for g, e in zip(got, expected, strict=True))
            assert diff <= TOLERANCE, (name, batch, diff)


@pytest.mark.parametrize("relative", [True, False])
def test_an_animated_clip_equals_pytorch(exported: tuple[Path, Path], relative: bool) -> None:
    ckpt, directory = exported
    generator = torch.Generator().manual_seed(0)
    source, driving = torch.rand(3, 64, 64, generator=generator), torch.rand(7, 3, 64, 64, generator=generator)
    kwargs = {"relative": relative, "batch_size": 5, "reference_frame": "best"}  # batches of 5 and 2
    expected = load_pretrained(ckpt).animate(source, driving, **kwargs)
    got = load_exported(directory).animate(source, driving, **kwargs)
    assert got.shape == expected.shape == (7, 3, 64, 64)
    assert float((got - expected).abs().max()) <= TOLERANCE


def test_the_manifest_round_trips(exported: tuple[Path, Path]) -> None:
    ckpt, directory = exported
    manifest = read_manifest(directory)
    assert Manifest.from_dict(json.loads(manifest.to_json()), "x") == manifest
    assert manifest.family == load_pretrained(ckpt).family and manifest.frame_size == FRAME_SIZE
    assert manifest.opset == 20 and manifest.motion_transfer == "python"
    for name in GRAPH_NAMES:
        assert (directory / manifest.graphs[name].file).is_file()
    assert manifest.graphs["motion_encoder"].inputs == ["frames"]
    assert manifest.graphs["renderer"].outputs == ["prediction"]


def broken_copies(directory: Path, tmp_path: Path) -> dict[str, Path]:
    """Export directories broken in the ways a copy or an edit breaks them."""
    cases: dict[str, Path] = {"missing": tmp_path / "nowhere"}

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(directory, target)
        cases[name] = target
        return target

    (copy("no_manifest") / "manifest.json").unlink()
    (copy("bad_json") / "manifest.json").write_text("{not json")
    (copy("no_graph") / "renderer.onnx").unlink()
    with (copy("modified_graph") / "renderer.onnx").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02\x03")
    truncated = copy("truncated_graph") / "motion_encoder.onnx"
    truncated.write_bytes(truncated.read_bytes()[:1000])
    data = json.loads((directory / "manifest.json").read_text())
    data["graphs"]["motion_encoder"]["sha256"] = __import__("hashlib").sha256(truncated.read_bytes()).hexdigest()
    (cases["truncated_graph"] / "manifest.json").write_text(json.dumps(data))
    swapped = copy("swapped_graphs")
    (swapped / "renderer.onnx").write_bytes((directory / "source_encoder.onnx").read_bytes())
    data = json.loads((directory / "manifest.json").read_text())
    data["graphs"]["renderer"]["sha256"] = data["graphs"]["source_encoder"]["sha256"]
    (swapped / "manifest.json").write_text(json.dumps(data))
    data = json.loads((directory / "manifest.json").read_text())
    data["format_version"] = 99
    (copy("newer_format") / "manifest.json").write_text(json.dumps(data))
    return cases


def test_a_broken_or_mismatched_export_directory_is_one_line(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, directory = exported
    for case, path in broken_copies(directory, tmp_path).items():
        with pytest.raises(ExportDirError) as info:
            load_exported(path)
        message = str(info.value)
        assert "\n" not in message and message, case
        assert str(path) in message or path.name in message, (case, message)
    family = read_manifest(directory).family
    with pytest.raises(ExportDirError, match="not the requested"):
        load_exported(directory, expected_family="fomm" if family != "fomm" else "liveportrait")


def test_baking_parametrized_weights_leaves_the_original_network_alone() -> None:
    """Spectral norm (LivePortrait's SPADE decoder) is baked into a copy; the network exported stays usable."""
    import copy

    from reenact.export.exporter import bake_parametrizations

    original = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(3, 4, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = original(x)
        baked = bake_parametrizations(copy.deepcopy(original))
        assert type(baked) is torch.nn.Conv2d and not hasattr(baked, "parametrizations")
        assert torch.allclose(baked(x), expected, atol=1e-6)
        assert torch.equal(original(x), expected)  # the original still has its parametrization and weight
        bake_parametrizations(copy.deepcopy(original))  # and can be baked again


class _DotFamily(ReenactmentFamily):
    """A family whose renderer uses an operator ONNX lacks (aten::vdot)."""

    family = "export_test_dot"

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))

    def encode_motion(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"value": frames.mean(dim=(2, 3))}  # (B, 3)

    def render(self, source: torch.Tensor, source_motion: dict, driving_motion: dict) -> dict:
        v = driving_motion["value"][0]
        return {"prediction": source * torch.vdot(v, v) * self.gain}


class _Declared(_DotFamily):
    family = "export_test_declared"
    export_unsupported = "its warp uses aten::frobnicate, which no ONNX opset has"


def test_a_family_that_cannot_be_exported_says_so_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        export_model(_Declared(), 8, tmp_path / "a", {"network": {}})
    assert str(info.value) == ("the export_test_declared family cannot be exported to ONNX: its warp uses "
                               "aten::frobnicate, which no ONNX opset has")
    with pytest.raises(ExportError) as info:
        export_model(_DotFamily(), 8, tmp_path / "b", {"network": {}})
    assert "\n" not in str(info.value) and "renderer" in str(info.value) and "vdot" in str(info.value)


def test_animate_cli_runs_on_the_export(exported: tuple[Path, Path], tmp_path: Path, faces_dir: Path) -> None:
    """The real-data path: ``python -m reenact.animate backend=onnxruntime export_dir=DIR`` on a real clip."""
    from reenact.cli.animate import run

    _, directory = exported
    output = tmp_path / "out.mp4"
    cfg = compose_config("animate", [
        "backend=onnxruntime", f"export_dir={directory}", f"source={faces_dir / 's0.jpg'}",
        f"driving={faces_dir / 'd0.mp4'}", f"output={output}", f"paths.output_dir={tmp_path}", "progress=false",
        "max_frames=4", "crop.source=false", "crop.driving=false"])
    (result,) = run(cfg)
    assert result.output == output and output.is_file() and result.num_frames == 4


def test_animate_cli_with_onnxruntime_needs_an_export_dir(tmp_path: Path) -> None:
    from reenact.animation.errors import AnimationInputError
    from reenact.cli.animate import run

    cfg = compose_config("animate", ["backend=onnxruntime", "source=a.jpg", "driving=b.mp4",
                                     f"paths.output_dir={tmp_path}"])
    with pytest.raises(AnimationInputError, match="export_dir is required"):
        run(cfg)
