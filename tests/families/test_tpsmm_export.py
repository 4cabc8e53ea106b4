"""ONNX export of the TPSMM family (tpsmm_small), as tests/test_export.py checks the other families: every graph
and an animated clip equal PyTorch's within 1e-4 (the TPS systems are inverted by Gauss-Jordan elimination in the
graph, ONNX having no matrix inverse)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from reenact.api import load_pretrained  # noqa: E402
from reenact.export.graphs import GRAPH_NAMES, example_inputs, graph_modules  # noqa: E402
from reenact.export.manifest import read_manifest  # noqa: E402
from reenact.export.onnx_backend import load_exported  # noqa: E402
from reenact.utils.hydra_utils import compose_config  # noqa: E402
from tests.test_export import FRAME_SIZE, TOLERANCE, random_checkpoint  # noqa: E402


def spread_keypoints(ckpt: Path) -> None:
    """Make the random detector place its 50 points as a trained one does: spread over the frame (its fc bias), moved
    a little by the image (its fc weights scaled down). An untrained detector's points cluster near the centre, where
    the TPS systems are so ill-conditioned that float32 rounding differences of 1e-7 in the keypoints (PyTorch and
    onnxruntime, or PyTorch at two batch sizes) grow to 1e-3 in the frames."""
    checkpoint = torch.load(ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    points = torch.rand(50, 2, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8  # (x, y) in [-0.8, 0.8]
    state["network.kp_detector.fg_encoder.fc.bias"] = torch.logit((points.flatten() + 1) / 2)
    state["network.kp_detector.fg_encoder.fc.weight"] *= 0.05
    torch.save(checkpoint, ckpt)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from reenact.cli.export import run

    root = tmp_path_factory.mktemp("tpsmm_small")
    torch.manual_seed(0)
    ckpt = random_checkpoint("tpsmm_small", root / "model.ckpt")
    spread_keypoints(ckpt)
    run(compose_config("export", [f"ckpt_path={ckpt}", f"output={root / 'onnx'}", f"paths.output_dir={root}"]))
    return ckpt, root / "onnx"


def test_every_graph_equals_pytorch_at_batch_1_and_4(exported: tuple[Path, Path]) -> None:
    ckpt, directory = exported
    manifest = read_manifest(directory)
    assert manifest.family == "tpsmm" and set(manifest.verified_max_abs_diff) == set(GRAPH_NAMES)
    assert max(manifest.verified_max_abs_diff.values()) <= TOLERANCE
    network = load_pretrained(ckpt).network
    onnx_network = load_exported(directory).network
    for batch in (1, 4):
        keys, inputs = example_inputs(network, FRAME_SIZE, max(batch, 2), seed=batch)
        inputs = {name: tuple(t[:batch] for t in tensors) for name, tensors in inputs.items()}
        modules = graph_modules(network, keys)
        for name in GRAPH_NAMES:
            entry, session = manifest.graphs[name], onnx_network.sessions[name]
            feeds = dict(zip(entry.inputs, (t.numpy() for t in inputs[name]), strict=True))
            got = session.run(None, {spec.name: feeds[spec.name] for spec in session.get_inputs()})
            with torch.no_grad():
                expected = modules[name](*inputs[name])
            expected = expected if isinstance(expected, tuple) else (expected,)
            diff = max(float(abs(torch.from_numpy(g) - e).max()) for g, e in zip(got, expected, strict=True))
            assert got[0].shape[0] == batch and diff <= TOLERANCE, (name, batch, diff)


@pytest.mark.parametrize("transfer", ["relative", "absolute"])
def test_an_animated_clip_equals_pytorch(exported: tuple[Path, Path], transfer: str) -> None:
    ckpt, directory = exported
    generator = torch.Generator().manual_seed(0)
    source, driving = torch.rand(3, 64, 64, generator=generator), torch.rand(5, 3, 64, 64, generator=generator)
    kwargs = {"transfer": transfer, "batch_size": 3}
    expected = load_pretrained(ckpt).animate(source, driving, **kwargs)
    got = load_exported(directory).animate(source, driving, **kwargs)
    assert got.shape == expected.shape == (5, 3, 64, 64)
    assert float((got - expected).abs().max()) <= TOLERANCE
