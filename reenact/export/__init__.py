"""ONNX export of a trained model and inference with onnxruntime (the optional extra ``reenact[export]``).

    python -m reenact.export ckpt_path=logs/train/runs/<run> output=exported/
    python -m reenact.animate backend=onnxruntime export_dir=exported/ source=me.jpg driving=talk.mp4 output=me.mp4

- :mod:`reenact.export.graphs`: the three graphs (source encoder, motion encoder, renderer), from the family contract;
- :mod:`reenact.export.exporter`: writing them with ``torch.onnx.export`` (opset 20) and checking them with onnxruntime;
- :mod:`reenact.export.manifest`: ``manifest.json`` and the checks that an export directory is whole;
- :mod:`reenact.export.onnx_backend`: :func:`load_exported`, the family contract on onnxruntime sessions.

Nothing outside this package imports onnx or onnxruntime, and this package imports them only when used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_checkpoint", "load_exported"]


def __getattr__(name: str) -> Any:
    if name == "export_checkpoint":
        from reenact.export.exporter import export_checkpoint

        return export_checkpoint
    if name == "load_exported":
        from reenact.export.onnx_backend import load_exported

        return load_exported
    raise AttributeError(f"module 'reenact.export' has no attribute {name!r}")
