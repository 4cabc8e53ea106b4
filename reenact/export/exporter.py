"""Export a trained checkpoint's inference path to ONNX: three graphs and a manifest (see :mod:`reenact.export`).

    from reenact.export.exporter import export_checkpoint
    manifest = export_checkpoint("logs/train/runs/<run>", "exported/")

Graphs are written with ``torch.onnx.export`` at opset 20 (the first to define N-D ``GridSample``, which the 3D
family's volume warp needs), with the batch dimension dynamic on every input and output. After writing, each
graph is run by onnxruntime on inputs of another batch size than the one it was traced with and compared with
PyTorch; the largest difference goes into the manifest, and one above ``tolerance`` is an error.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reenact.export.graphs import GRAPH_NAMES, RENDERER, example_inputs, graph_modules
from reenact.export.manifest import ExportError, GraphEntry, Manifest, sha256_of
from reenact.utils.messages import first_line

log = logging.getLogger(__name__)
OPSET = 20
EXPORTERS = ("torchscript", "dynamo")
TRACE_BATCH = 2  # traced with 2 frames, verified with VERIFY_BATCH: a batch size baked into the graph shows up
VERIFY_BATCH = 3


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'reenact[export]'") from None
    return onnxruntime


def reenact_version() -> str:
    try:
        return importlib.metadata.version("reenact")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def export_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], opset: int, exporter: str) -> None:
    """One graph with a dynamic batch dimension ("batch") on every input and output."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}; choose one of {', '.join(EXPORTERS)}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the verification below is the check
        if exporter == "torchscript":
            axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
            torch.onnx.export(module, inputs, str(path), opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, dynamo=False)
        else:
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch} for _ in inputs)
            program = torch.onnx.export(module, inputs, input_names=input_names, output_names=output_names,
                                        opset_version=opset, dynamic_shapes=shapes, dynamo=True,
                                        external_data=False, verbose=False)
            program.save(str(path))


def bake_parametrizations(network: nn.Module) -> nn.Module:
    """Replace every parametrized weight (spectral norm, weight norm...) by its value in eval mode, in place.

    A parametrization recomputes its weight at every call (spectral norm: a power-iteration step and ``vdot``,
    which ONNX has no operator for); at inference the value is a constant, so the graph keeps the constant.
    ``torch.nn.utils.parametrize.remove_parametrizations`` is not used: it deletes the property from the class
    that parametrizing created, which a deep copy shares with the original network, and would break the original.
    """
    from torch.nn.utils import parametrize

    with torch.no_grad():
        for module in list(network.modules()):
            if parametrize.is_parametrized(module):
                values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
                module.__class__ = parametrize.type_before_parametrizations(module)
                del module.parametrizations
                for name, value in values.items():
                    module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return network


def max_abs_diff(session: Any, module: nn.Module, input_names: list[str], inputs: tuple[torch.Tensor, ...]) -> float:
    """The largest |onnxruntime - PyTorch| over every output of one graph."""
    feeds = dict(zip(input_names, (tensor.numpy() for tensor in inputs), strict=True))
    got = session.run(None, {spec.name: feeds[spec.name] for spec in session.get_inputs()})
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, expected, strict=True))


def export_model(network: Any, frame_size: int, output: str | Path, model_config: dict[str, Any],
                 checkpoint: str = "", opset: int = OPSET, exporter: str = "torchscript", verify: bool = True,
                 tolerance: float = 1e-4) -> Manifest:
    """Write the three graphs of ``network`` (a :class:`ReenactmentFamily` in eval mode) and the manifest."""
    family = network.family
    if network.export_unsupported:
        raise ExportError(f"the {family} family cannot be exported to ONNX: {network.export_unsupported}")
    network = bake_parametrizations(copy.deepcopy(network).eval().to("cpu"))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        keys, traced = example_inputs(network, frame_size, TRACE_BATCH)
        _, checked = example_inputs(network, frame_size, VERIFY_BATCH, seed=1)
    modules, names = graph_modules(network, keys), keys.names()
    graphs: dict[str, GraphEntry] = {}
    for name in GRAPH_NAMES:
        path = output / f"{name}.onnx"
        inputs, outputs = names[name]
        try:
            export_graph(modules[name], traced[name], path, inputs, outputs, opset, exporter)
        except ExportError:
            raise
        except Exception as exc:  # the exporter's own error names the operator it has no ONNX form for
            raise ExportError(f"cannot export the {family} model's {name} to ONNX opset {opset} with the "
                              f"{exporter} exporter: {first_line(exc)}") from None
        graphs[name] = GraphEntry(file=path.name, inputs=inputs, outputs=outputs, sha256=sha256_of(path))
    with torch.no_grad():
        output_size = int(modules[RENDERER](*traced[RENDERER]).shape[-1])
    manifest = Manifest(family=family, frame_size=frame_size, output_size=output_size, opset=opset,
                        exporter=exporter, reenact_version=reenact_version(), torch_version=torch.__version__,
                        graphs=graphs, model_config=model_config, checkpoint=checkpoint)
    if verify:
        ort = require_onnxruntime()
        network.eval()
        for name in GRAPH_NAMES:
            session = ort.InferenceSession(str(output / graphs[name].file), providers=["CPUExecutionProvider"])
            diff = max_abs_diff(session, modules[name], names[name][0], checked[name])
            manifest.verified_max_abs_diff[name] = diff
            log.info("%s: onnxruntime vs PyTorch max abs diff %.3g at batch %d", name, diff, VERIFY_BATCH)
            if not diff <= tolerance:
                raise ExportError(f"the exported {name} differs from PyTorch by {diff:.3g} (> {tolerance:g}) "
                                  f"at batch {VERIFY_BATCH}; the graph is in {output}")
    manifest.write(output)
    return manifest



def export_checkpoint(ckpt_path: str | Path, output: str | Path, opset: int = OPSET, exporter: str = "torchscript",
                      verify: bool = True, tolerance: float = 1e-4) -> Manifest:
    """Export a training checkpoint (a file or a run directory); checkpoint errors are one-line
    :class:`reenact.checkpoints.CheckpointError`."""
    from reenact.api import load_pretrained

    model = load_pretrained(ckpt_path, device="cpu")
    return export_model(model.network, model.frame_size, output, model.config, checkpoint=str(ckpt_path),
                        opset=opset, exporter=exporter, verify=verify, tolerance=tolerance)
