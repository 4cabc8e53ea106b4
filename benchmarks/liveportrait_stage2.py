"""LivePortrait's second stage on the synthetic faces' held-out identities: the border seam with stitching off and on,
and whether a requested eye openness shows in the rendered eyes.

    python benchmarks/liveportrait_stage2.py --ckpt RUN_OR_CKPT [RUN_OR_CKPT ...] --data CACHE/synthetic/<set>

For each checkpoint (a stage-1 run, then its stage-2 run, say):

- **seam**: each test clip's first frame is driven by another identity's clip (relative motion from that clip's first
  frame, as animation does); the figure is the mean |render - source| over the outer ring of the crop (``--ring`` of
  its side on each edge: where a pasted-back crop meets the full image), stitching off and on.
- **eye ratio**: each test source (eyes open) is rendered with its own motion, once plainly and once with the eye
  retargeting network asked for ``--eye-scale`` times the source's eye ratio (the ratio measured on the dataset's
  landmarks, the units the network was trained in); dlib's 68 landmarks on both renders (resized to 256, the shape
  predictor refined from the landmarks dlib finds on the source frame) measure the eye ratio, and the row gives the
  requested relative change beside the measured one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reenact.animation.landmarks import LANDMARK_SIZE, landmark_detector  # noqa: E402
from reenact.api import load_pretrained  # noqa: E402
from reenact.data.video import iter_frames  # noqa: E402
from reenact.families.liveportrait.ratios import eye_ratios  # noqa: E402
from reenact.layers.geometry import resize_to  # noqa: E402


def clips(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(identity, frames (T, H, W, 3) uint8, landmarks (T, 16, 2) pixels) of every test clip."""
    out = []
    for path in sorted(folder.glob("*.mp4")):
        frames = np.stack(list(iter_frames(path)))
        out.append((path.stem.split("#")[0], frames, np.load(path.with_suffix(".landmarks.npy"))))
    return out


def tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def ring(size: int, fraction: float) -> torch.Tensor:
    width = max(1, round(size * fraction))
    mask = torch.ones(size, size)
    mask[width:-width, width:-width] = 0
    return mask


@torch.no_grad()
def seam(network: torch.nn.Module, data: list, fraction: float) -> tuple[float, float]:
    """Mean outer-ring |render - source| with stitching off, on."""
    totals = [0.0, 0.0]
    count = 0
    for i, (identity, frames, _) in enumerate(data):
        other = next(d for d in data[i + 1:] + data[:i] if d[0] != identity)
        source = tensor(frames[:1])
        driving = tensor(other[1])
        s = network.compact_motion(network.encode_motion(source))
        d = network.compact_motion(network.encode_motion(driving))
        reference = {k: v[:1] for k, v in d.items()}
        encoding = {k: v.expand(driving.shape[0], *v.shape[1:]) for k, v in network.encode_source(source).items()}
        source_b = {k: v.expand(driving.shape[0], *v.shape[1:]) for k, v in s.items()}
        mask = ring(source.shape[-1], fraction)
        for j, stitching in enumerate((False, True)):
            moved = network.transfer(s, d, reference, stitching=stitching)
            render = network.render_encoded(encoding, source_b, moved).clamp(0, 1)
            totals[j] += float(((render - source).abs().mean(1) * mask).sum() / (mask.sum() * render.shape[0]))
        count += 1
    return totals[0] / count, totals[1] / count


def render_landmarks(detector, images: torch.Tensor, start: np.ndarray) -> torch.Tensor:  # noqa: ANN001
    """(T, 3, H, W) renders in [0, 1] -> (T, 68, 2) dlib landmarks at LANDMARK_SIZE, each refined from ``start``
    (68, 2): the source frame's landmarks. The renders keep the source's framing, so the shape predictor starts in
    the right box and needs no HOG detection, which misses faces in renders upscaled from 64 pixels."""
    resized = resize_to(images.float(), (LANDMARK_SIZE, LANDMARK_SIZE)).clamp(0, 1)
    crops = (resized * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(np.stack([detector.refine(crop, start) for crop in crops])).float()


@torch.no_grad()
def eye_following(network: torch.nn.Module, data: list, scale: float) -> list[tuple[float, float]]:
    """(requested relative change, measured relative change) per source whose eyes dlib finds on the source frame."""
    detector = landmark_detector()
    rows = []
    for _, frames, points in data:
        t = int(np.argmax([eye_ratios(torch.from_numpy(p[None].astype(np.float32))).mean().item() for p in points]))
        source = tensor(frames[t:t + 1])
        resized = resize_to(source, (LANDMARK_SIZE, LANDMARK_SIZE)).clamp(0, 1)
        start = detector.detect((resized[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())
        if start is None:
            continue
        motion = network.compact_motion(network.encode_motion(source))
        c_s = eye_ratios(torch.from_numpy(points[t:t + 1].astype(np.float32)))  # (1, 2) training units
        condition = torch.cat([c_s, c_s.mean(-1, keepdim=True) * scale], dim=1)
        moved = network.transfer(motion, motion, motion)
        retargeted = {**moved, "eye_condition": condition, "eye_weight": torch.ones(1, 1)}
        encoding = network.encode_source(source)
        plain = network.render_encoded(encoding, motion, moved).clamp(0, 1)
        changed = network.render_encoded(encoding, motion, retargeted).clamp(0, 1)
        measured = eye_ratios(render_landmarks(detector, torch.cat([plain, changed]), start)).mean(-1)  # (2,)
        if torch.isfinite(measured).all() and measured[0] > 0:
            rows.append((scale - 1.0, float(measured[1] / measured[0] - 1.0)))
    return rows


@torch.no_grad()
def blink_rows(network: torch.nn.Module, data: list, limit: int = 8) -> list[str]:
    """Whether the first stage renders blinks at all, per test clip: dlib eye ratios of the most open-eyed frame
    (the source), the most closed-eyed frame, the source rendered with its own motion, with the closed-eyed frame's
    motion (first stage alone), and with the eye network asked for the closed-eyed frame's ratio; and the eye
    network's largest keypoint offset for that request."""
    detector = landmark_detector()
    rows = []
    for identity, frames, points in data[:limit]:
        ratios = np.array([eye_ratios(torch.from_numpy(p[None].astype(np.float32))).mean().item() for p in points])
        opened, closed = int(ratios.argmax()), int(ratios.argmin())
        source, driving = tensor(frames[opened:opened + 1]), tensor(frames[closed:closed + 1])
        resized = resize_to(source, (LANDMARK_SIZE, LANDMARK_SIZE)).clamp(0, 1)
        start = detector.detect((resized[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())
        if start is None:
            continue
        s = network.compact_motion(network.encode_motion(source))
        d = network.compact_motion(network.encode_motion(driving))
        condition = torch.cat([eye_ratios(torch.from_numpy(points[opened:opened + 1].astype(np.float32))),
                               torch.tensor([[float(ratios[closed])]])], dim=1)
        encoding = network.encode_source(source)
        own = network.render_encoded(encoding, s, network.transfer(s, s, s)).clamp(0, 1)
        blink = network.render_encoded(encoding, s, network.transfer(s, d, s)).clamp(0, 1)
        asked = {**network.transfer(s, s, s), "eye_condition": condition, "eye_weight": torch.ones(1, 1)}
        retargeted = network.render_encoded(encoding, s, asked).clamp(0, 1)
        offset = float(network.eye_retargeting_network.delta(s["value"], condition).abs().max())
        measured = eye_ratios(render_landmarks(detector, torch.cat([source, driving, own, blink, retargeted]),
                                               start)).mean(-1).tolist()
        rows.append(f"| {identity} | {ratios[opened]:.3f} / {ratios[closed]:.3f} | "
                    + " | ".join(f"{m:.3f}" for m in measured) + f" | {offset:.1e} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--data", type=Path, required=True, help="a synthetic set folder (with test/)")
    parser.add_argument("--ring", type=float, default=0.1)
    parser.add_argument("--eye-scale", type=float, default=0.3)
    parser.add_argument("--blinks", action="store_true",
                        help="also print, per test clip, whether the first stage renders a closed-eyed frame's blink")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    data = clips(args.data / "test")
    print(f"| checkpoint | seam, stitching off | seam, stitching on | eye ratio asked x{args.eye_scale:g}: "
          f"measured change (mean, sources) |")
    print("|---|---|---|---|")
    for ckpt in args.ckpt:
        network = load_pretrained(ckpt, device="cpu").network
        off, on = seam(network, data, args.ring)
        rows = eye_following(network, data, args.eye_scale)
        measured = np.mean([m for _, m in rows]) if rows else float("nan")
        print(f"| {ckpt} | {off:.4f} | {on:.4f} | {measured:+.3f} (asked {args.eye_scale - 1:+.2f}; "
              f"{len(rows)}/{len(data)} measured) |")
    if args.blinks:
        for ckpt in args.ckpt:
            print(f"\n{ckpt}: dlib eye ratios\n\n| clip | dataset ratio open / closed | source | closed-eyed frame | "
                  "render, own motion | render, blink-driven | render, eye network asked for the closed ratio | "
                  "max eye offset |\n|---|---|---|---|---|---|---|---|")
            print("\n".join(blink_rows(load_pretrained(ckpt, device="cpu").network, data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
