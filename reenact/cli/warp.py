"""Warp one image to another's geometry: ``python -m reenact.warp ckpt_path=CKPT content=a.jpg geometry=b.jpg
output=out.png``.

Learned correlation warping used as in its paper (Liu et al., CVPR 2021, module D): the network's warp field between
``content`` (the image warped) and ``geometry`` (the image whose geometry it takes), computed at the checkpoint's
frame size, is applied to the content image at its own resolution. Beside the output goes a picture of the flow
(hue: direction, brightness: length, relative to the longest displacement). Any checkpoint whose family renders
through a 2D warp field (``renders_2d_flow``: ``deformation`` (B, h, w, 2)) works. Bad input is reported as one line
with exit code 2; ``run(cfg)`` holds the logic so tests call it without Hydra's ``main``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from reenact.cli import user_errors, with_override_check
from reenact.errors import ReenactError
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE
from reenact.utils.messages import one_line

log = logging.getLogger("reenact.warp")
REQUIRED = ("ckpt_path", "content", "geometry", "output")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class WarpInputError(ReenactError, ValueError):
    """An input image, output path or checkpoint that warping cannot use."""


def read_image(path: str | Path, name: str) -> torch.Tensor:
    """An image file as (3, H, W) float in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise WarpInputError(f"{name} image not found: {path}")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise WarpInputError(f"cannot read {name} image {path}: {one_line(exc)}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def write_image(image: torch.Tensor, path: Path) -> None:
    """(3, H, W) in [0, 1] -> an image file (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)


def flow_picture(deformation: torch.Tensor) -> torch.Tensor:
    """A backward sampling grid (h, w, 2) -> its displacement from the identity as colour (3, h, w) in [0, 1]:
    hue = direction, value = length / the longest length (black: no motion)."""
    from reenact.layers.geometry import make_coordinate_grid

    displacement = deformation.float().cpu() - make_coordinate_grid(tuple(deformation.shape[:2]))
    length = displacement.norm(dim=-1)  # (h, w)
    value = length / length.max().clamp_min(1e-8)
    hue = (torch.atan2(displacement[..., 1], displacement[..., 0]) / (2 * math.pi)) % 1.0  # (h, w) in [0, 1)
    # HSV with full saturation -> RGB
    sector = hue * 6
    channels = []
    for offset in (5.0, 3.0, 1.0):  # R, G, B
        k = (offset + sector) % 6
        channels.append(value * (1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)))
    return torch.stack(channels)


def default_flow_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_flow.png")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Warp ``cfg.content`` to ``cfg.geometry``'s geometry; returns the paths written and the field's size."""
    for key in REQUIRED:
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise WarpInputError(f"{key} is required: python -m reenact.warp ckpt_path=CKPT content=IMAGE "
                                 f"geometry=IMAGE output=OUT.png")
    output = Path(str(cfg.output))
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise WarpInputError(f"output={output}: give an image file name ({', '.join(IMAGE_SUFFIXES)})")
    flow_path = Path(str(cfg.flow_output)) if cfg.get("flow_output") else default_flow_path(output)
    content = read_image(cfg.content, "content")
    geometry = read_image(cfg.geometry, "geometry")

    from reenact.api import load_pretrained
    from reenact.layers.geometry import resize_to, warp

    model = load_pretrained(cfg.ckpt_path, device=cfg.get("device", "auto"))
    if not model.network.renders_2d_flow:
        raise WarpInputError(f"the {model.family!r} family computes no 2D warp field; use a checkpoint of a family "
                             f"that renders through one (model=correlation, fomm, or fomm with "
                             f"model/refinement=correlation)")
    size = (model.frame_size, model.frame_size)
    pair = [resize_to(image[None].to(model.device), size) for image in (content, geometry)]
    out = model.reconstruct(*pair)
    deformation = out["deformation"]  # (1, h, w, 2): a family that renders through a 2D flow outputs it
    with torch.no_grad():  # the field applied to the content at its own resolution
        warped = warp(content[None].to(model.device), deformation.to(torch.float32))[0]
    write_image(warped, output)
    flow = flow_picture(deformation[0])
    write_image(resize_to(flow[None], tuple(content.shape[-2:]))[0], flow_path)
    log.info("warped %s to the geometry of %s with a %s model", cfg.content, cfg.geometry, model.family)
    print(f"wrote {output} and {flow_path}")
    return {"output": output, "flow": flow_path, "field_size": tuple(deformation.shape[1:3])}


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="warp")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
