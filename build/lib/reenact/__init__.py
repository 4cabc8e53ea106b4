"""reenact: keypoint-driven face reenactment training."""

from __future__ import annotations

from typing import Any

__all__ = ["load_pretrained"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import reenact` stays fast (torch and Hydra load only when the API is used).
    if name == "load_pretrained":
        from reenact.api import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'reenact' has no attribute {name!r}")
