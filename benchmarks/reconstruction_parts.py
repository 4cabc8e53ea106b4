"""Where a model's reconstruction error on held-out clips comes from: motion or rendering.

    python benchmarks/reconstruction_parts.py CKPT PREPARED/test --frames 64

For each clip (a folder of ``.mp4`` files, such as the ``test/`` folder of ``reenact.prepare``), every frame t is
reconstructed from frame 0, and four mean L1 errors against frame t are printed:

* ``prediction``: the model's output (what ``val/l1`` measures);
* ``copy``: frame 0 itself (``val/l1_copy_source``);
* ``source->source``: the output when frame 0 drives itself, measured against frame 0: what rendering loses when
  nothing moves (0 for a perfect decoder);
* ``deformed``: frame 0 warped by the model's flow, for families with a deformation field: what the motion alone
  gives, without the decoder;
* ``keypoints (px)``: for a model trained with landmark guidance (a ``LandmarkGuidance`` term in its objective) on
  clips with ``{clip}.landmarks.npy`` (``prepare --landmarks``), the mean distance in pixels between each guided
  keypoint and its landmark, over the frames where a face was found: whether the keypoints transfer to these faces.

A ``prediction`` above ``copy`` with ``deformed`` near ``copy`` and a large ``source->source`` points at the decoder. A
large ``deformed`` points at the motion, and large keypoint distances on held-out faces against small ones on
training faces point at a keypoint detector that learned its training faces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import reenact
from reenact.data.datasets import side_file
from reenact.data.video import probe_video, read_frames

GUIDANCE_TARGET = "reenact.losses.landmarks.LandmarkGuidance"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a checkpoint file or a training run directory")
    parser.add_argument("clips", type=Path, help="a folder of .mp4 clips at the model's frame size")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (from the start)")
    return parser


def guided_pairs(model_config: dict) -> tuple[list[int], list[int]] | None:
    """(keypoints, landmark_indices) of the model's landmark guidance term, or None without one."""
    for term in ((model_config.get("objective") or {}).get("terms") or {}).values():
        if isinstance(term, dict) and term.get("_target_") == GUIDANCE_TARGET:
            return list(term["keypoints"]), list(term["landmark_indices"])
    return None


def keypoint_distance(
    network: torch.nn.Module, video: torch.Tensor, landmarks: np.ndarray, pairs: tuple[list[int], list[int]]
) -> float:
    """Mean pixel distance between the guided keypoints of ``video`` (T, 3, S, S) and their landmarks (T, L, 2) in
    pixels, over the frames with a face; NaN when the family has no 2D keypoints or no frame has a face."""
    points = network.keypoints_2d(network.encode_motion(video))  # (T, K, 2) in [-1, 1], or None
    if points is None:
        return float("nan")
    size = video.shape[-1]
    predicted = (points[:, pairs[0]] + 1) / 2 * (size - 1)  # (T, n, 2) pixels, align_corners=True
    target = torch.from_numpy(np.asarray(landmarks, dtype=np.float32))[:, pairs[1]]  # (T, n, 2) pixels
    found = torch.isfinite(target).all(dim=-1).all(dim=-1)  # (T,)
    if not found.any():
        return float("nan")
    return (predicted[found] - target[found]).norm(dim=-1).mean().item()


@torch.no_grad()
def clip_errors(
    network: torch.nn.Module, path: Path, frames: int, pairs: tuple[list[int], list[int]] | None = None
) -> dict[str, float]:
    count = min(frames, probe_video(path).num_frames)
    video = torch.from_numpy(read_frames(path, range(count))).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    source = video[:1].expand(count, -1, -1, -1)
    output = network(source, video)
    still = network(source[:1], source[:1])
    errors = {
        "prediction": (output["prediction"].clamp(0, 1) - video).abs().mean().item(),
        "copy": (source - video).abs().mean().item(),
        "source->source": (still["prediction"].clamp(0, 1) - source[:1]).abs().mean().item(),
    }
    deformed = output.get("deformed")
    errors["deformed"] = float("nan") if deformed is None else (deformed - video).abs().mean().item()
    landmarks = side_file(path, "landmarks")
    errors["keypoints"] = float("nan")
    if pairs is not None and landmarks.is_file():
        errors["keypoints"] = keypoint_distance(network, video, np.load(landmarks)[:count], pairs)
    return errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = reenact.load_pretrained(args.ckpt, device="cpu")
    pairs = guided_pairs(model.config)
    print("| clip | prediction | copy | ratio | source->source | deformed | keypoints (px) |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(args.clips.glob("*.mp4")):
        e = clip_errors(model.network, path, args.frames, pairs)
        print(f"| {path.name.split('#')[0]} | {e['prediction']:.4f} | {e['copy']:.4f} | "
              f"{e['prediction'] / e['copy']:.2f} | {e['source->source']:.4f} | {e['deformed']:.4f} | "
              f"{e['keypoints']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
