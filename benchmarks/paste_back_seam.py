"""The seam of a pasted-back LivePortrait animation, stitching off against on, on real portraits.

    python benchmarks/paste_back_seam.py --ckpt RUN_OR_CKPT --pairs s0:d11 s3:d12 [--frames 100]

For each (portrait, driving clip) pair of ``../shared/data/faces`` this runs, exactly as a user would,

    python -m reenact.animate ckpt_path=CKPT source=PORTRAIT driving=CLIP output=OUT paste_back=true stitching=false
    python -m reenact.animate ckpt_path=CKPT source=PORTRAIT driving=CLIP output=OUT paste_back=true stitching=true

(``max_frames=--frames``, progress off), decodes both videos and measures the seam: the mean absolute difference
(0-255) between each output frame and the source portrait over the band where the pasted crop meets the full image,
the outer ``--band`` of the crop box's side inside its edges (shoulders, hair, background: the parts the driving
motion should leave where they are). The crop box is the one the job used (the same detector and settings). Prints a
markdown table with both numbers per pair and their mean.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"
sys.path.insert(0, str(REPO))


def band_mask(height: int, width: int, box: tuple[int, int, int, int], band: float) -> np.ndarray:
    """(H, W) bool: the ring of ``band`` x the box's side inside the square ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    inset = max(1, round((x1 - x0) * band))
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    mask[y0 + inset:y1 - inset, x0 + inset:x1 - inset] = False
    return mask


def seam(video: Path, source: np.ndarray, box: tuple[int, int, int, int], band: float) -> float:
    """Mean |frame - source| over the band, over every frame of ``video`` (0-255 units)."""
    from reenact.data.video import iter_frames

    total, count = 0.0, 0
    for frame in iter_frames(video):
        reference = source[: frame.shape[0], : frame.shape[1]]  # the output drops an odd last row/column
        mask = band_mask(frame.shape[0], frame.shape[1], box, band)
        total += float(np.abs(frame.astype(np.float32) - reference.astype(np.float32))[mask].mean())
        count += 1
    return total / max(count, 1)


def crop_box(portrait: Path) -> tuple[int, int, int, int]:
    from reenact.animation.cropping import CropSettings, build_detector
    from reenact.animation.video_job import AnimationOptions, prepare_source

    options = AnimationOptions(crop=CropSettings())
    _, _, box = prepare_source(portrait, options, build_detector(options.crop))
    return tuple(int(v) for v in box)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--pairs", nargs="+", default=["s0:d11", "s3:d12", "s4:d0", "s11:d10"],
                        help="PORTRAIT:CLIP names in --faces (a portrait driven by another person's clip)")
    parser.add_argument("--faces", type=Path, default=FACES)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--band", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=None, help="where the videos go (default: a temporary folder)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    from reenact.animation.cropping import CropSettings, read_image

    work = args.work or Path(tempfile.mkdtemp(prefix="reenact_seam_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint {args.ckpt}; band: the outer {args.band:g} of the crop box's side; first {args.frames} frames")
    print("| portrait | driving | crop box | seam, stitching off | seam, stitching on | change |")
    print("|---|---|---|---|---|---|")
    rows = []
    for pair in args.pairs:
        portrait_name, clip_name = pair.split(":")
        portrait, clip = args.faces / f"{portrait_name}.jpg", args.faces / f"{clip_name}.mp4"
        box = crop_box(portrait)
        source = read_image(portrait, CropSettings().source_max_dim)  # as the job reads it
        figures = []
        for stitching in ("false", "true"):
            out = work / f"{portrait_name}_{clip_name}_stitching_{stitching}.mp4"
            command = [sys.executable, "-m", "reenact.animate", f"ckpt_path={args.ckpt}", f"source={portrait}",
                       f"driving={clip}", f"output={out}", "paste_back=true", f"stitching={stitching}",
                       f"max_frames={args.frames}", "progress=false"]
            subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
            figures.append(seam(out, source, box, args.band))
        rows.append(figures)
        print(f"| {portrait_name} | {clip_name} | {box} | {figures[0]:.2f} | {figures[1]:.2f} | "
              f"{(figures[1] / figures[0] - 1) * 100:+.1f} % |", flush=True)
    off, on = np.mean([r[0] for r in rows]), np.mean([r[1] for r in rows])
    print(f"| **mean** | | | {off:.2f} | {on:.2f} | {(on / off - 1) * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
