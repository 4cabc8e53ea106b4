"""Availability checks for the optional face-alignment (FAN / S3FD) backend.

face-alignment downloads its weights from URLs on first use. This project never downloads at run
time, so the backend is used only when the package is importable *and* its weight files are already
in the torch hub cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``).
Otherwise a one-line error names what is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

# face-alignment 1.5.0 file names, used when the installed version does not expose its URL tables.
_FALLBACK_FILES = {"s3fd": "s3fd-619a316812.pth", "2DFAN-4": "2DFAN4-11f355bf06.pth.tar"}


def _hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _weight_file_names() -> dict[str, str]:
    names = dict(_FALLBACK_FILES)
    try:
        from face_alignment import api
        from face_alignment.detection.sfd import sfd_detector

        tables = {**getattr(sfd_detector, "models_urls", {}), **getattr(api, "models_urls", {})}
        for key in names:
            if isinstance(tables.get(key), str):
                names[key] = Path(urlparse(tables[key]).path).name
    except Exception:  # an unusual layout of the package: keep the known 1.5.0 names
        pass
    return names


def require_face_alignment(need_landmark_model: bool) -> None:
    """Raise a one-line ImportError/FileNotFoundError unless FAN can run offline here."""
    if importlib.util.find_spec("face_alignment") is None:
        raise ImportError(
            "backend 'fan' needs the optional package face-alignment (pip install face-alignment, "
            "then keep opencv-contrib-python-headless<5) and its weights in the torch hub cache"
        )
    names = _weight_file_names()
    wanted = ["s3fd"] + (["2DFAN-4"] if need_landmark_model else [])
    folder = _hub_checkpoint_dir()
    missing = [names[k] for k in wanted if not (folder / names[k]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"backend 'fan' needs weight file(s) {', '.join(missing)} in {folder} "
            "(download them once on a machine with internet; nothing is downloaded at run time)"
        )


def face_alignment_available(need_landmark_model: bool = True) -> bool:
    try:
        require_face_alignment(need_landmark_model)
    except (ImportError, FileNotFoundError):
        return False
    return True
