"""reenact: face reenactment training, one Lightning task for every model family (keypoint-driven FOMM and
LivePortrait, implicit warping, correlation warping, and any family registered as a plug-in)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_exported", "load_pretrained"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import reenact` stays fast (torch and Hydra load only when the API is used).
    if name == "load_pretrained":
        from reenact.api import load_pretrained

        return load_pretrained
    if name == "load_exported":  # an ONNX export directory on onnxruntime (pip install 'reenact[export]')
        from reenact.export.onnx_backend import load_exported

        return load_exported
    raise AttributeError(f"module 'reenact' has no attribute {name!r}")
