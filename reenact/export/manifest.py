"""The manifest of an ONNX export directory (``manifest.json``) and the checks that a directory is whole.

A directory written by ``python -m reenact.export`` holds ``source_encoder.onnx``, ``motion_encoder.onnx``,
``renderer.onnx`` and ``manifest.json``: the family, the frame size, each graph's file, input and output names
and SHA-256, the opset, the exporter, the reenact and torch versions, the model config (to rebuild the family's
motion arithmetic) and the largest difference from PyTorch measured when it was written. Every way a directory
can be unusable (missing, no or broken manifest, a graph missing, modified or with other names) is one
:class:`ExportDirError` line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reenact.errors import ReenactError
from reenact.export.graphs import GRAPH_NAMES

MANIFEST_NAME = "manifest.json"
FORMAT = "reenact-onnx"
FORMAT_VERSION = 1


class ExportError(ReenactError, ValueError):
    """A model that cannot be exported (one line naming the family and the operator or the reason)."""


class ExportDirError(ReenactError, ValueError):
    """An export directory that is missing, incomplete, modified or does not match its manifest."""


@dataclass
class GraphEntry:
    file: str
    inputs: list[str]
    outputs: list[str]
    sha256: str


@dataclass
class Manifest:
    family: str
    frame_size: int
    output_size: int  # the prediction's height and width (H' >= frame_size for upsampling decoders)
    opset: int
    exporter: str  # torchscript | dynamo (torch.onnx.export's two exporters)
    reenact_version: str
    torch_version: str
    graphs: dict[str, GraphEntry]
    model_config: dict[str, Any]  # the checkpoint's model config: rebuilds the family's motion arithmetic
    checkpoint: str = ""
    motion_transfer: str = "python"  # the family's transfer_motion runs in Python (torch on the CPU)
    verified_max_abs_diff: dict[str, float] = field(default_factory=dict)  # onnxruntime vs PyTorch, per graph
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExportDirError(f"{where} is not a reenact ONNX manifest (format is not {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ExportDirError(f"{where} has format_version {data.get('format_version')!r}; this reenact reads "
                                 f"{FORMAT_VERSION}: export the checkpoint again")
        required = [f for f in cls.__dataclass_fields__ if f not in ("checkpoint", "motion_transfer",
                                                                      "verified_max_abs_diff")]
        missing = [f for f in required if f not in data]
        if missing:
            raise ExportDirError(f"{where} lacks {', '.join(missing)}: the export is incomplete; export again")
        graphs = data["graphs"]
        if not isinstance(graphs, dict) or sorted(graphs) != sorted(GRAPH_NAMES):
            raise ExportDirError(f"{where} lists graphs {sorted(graphs) if isinstance(graphs, dict) else graphs}; "
                                 f"expected {', '.join(GRAPH_NAMES)}")
        try:
            entries = {name: GraphEntry(**entry) for name, entry in graphs.items()}
            return cls(**{**data, "graphs": entries})
        except TypeError as exc:
            raise ExportDirError(f"{where} has a malformed entry ({exc})") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str | Path, check_files: bool = True) -> Manifest:
    """The manifest of an export directory; with ``check_files``, every graph file exists and has the SHA-256
    the manifest records. One :class:`ExportDirError` line for anything wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportDirError(f"export directory not found: {directory}")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ExportDirError(f"{directory} is not a reenact ONNX export (no {MANIFEST_NAME}); write one with "
                             f"python -m reenact.export ckpt_path=CKPT output={directory}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportDirError(f"{path} is not valid JSON ({exc}); export again") from None
    manifest = Manifest.from_dict(data, str(path))
    if check_files:
        for name, entry in manifest.graphs.items():
            file = directory / entry.file
            if not file.is_file():
                raise ExportDirError(f"{directory}: the {name} graph {entry.file} is missing; export again")
            if sha256_of(file) != entry.sha256:
                raise ExportDirError(f"{file} does not match {MANIFEST_NAME} (SHA-256 differs): the export is "
                                     f"incomplete or was modified; export again")
    return manifest
