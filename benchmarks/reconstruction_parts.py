"""Where a model's reconstruction error on held-out clips comes from: motion or rendering.

    python benchmarks/reconstruction_parts.py CKPT PREPARED/test --frames 64

For each clip (a folder of ``.mp4`` files, such as the ``test/`` folder of ``reenact.prepare``), every frame t is
reconstructed from frame 0, and four mean L1 errors against frame t are printed:

* ``prediction``: the model's output (what ``val/l1`` measures);
* ``copy``: frame 0 itself (``val/l1_copy_source``);
* ``source->source``: the output when frame 0 drives itself, measured against frame 0: what rendering loses when
  nothing moves (0 for a perfect decoder);
* ``deformed``: frame 0 warped by the model's flow, for families with a deformation field: what the motion alone
  gives, without the decoder.

A ``prediction`` above ``copy`` with ``deformed`` near ``copy`` and a large ``source->source`` points at the decoder. A
large ``deformed`` points at the motion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import reenact
from reenact.data.video import probe_video, read_frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a checkpoint file or a training run directory")
    parser.add_argument("clips", type=Path, help="a folder of .mp4 clips at the model's frame size")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (from the start)")
    return parser


@torch.no_grad()
def clip_errors(network: torch.nn.Module, path: Path, frames: int) -> dict[str, float]:
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
    return errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = reenact.load_pretrained(args.ckpt, device="cpu")
    print("| clip | prediction | copy | ratio | source->source | deformed |")
    print("|---|---|---|---|---|---|")
    for path in sorted(args.clips.glob("*.mp4")):
        e = clip_errors(model.network, path, args.frames)
        print(f"| {path.name.split('#')[0]} | {e['prediction']:.4f} | {e['copy']:.4f} | "
              f"{e['prediction'] / e['copy']:.2f} | {e['source->source']:.4f} | {e['deformed']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
