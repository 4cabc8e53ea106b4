"""Warp accuracy of learned correlation warping trained with Liu et al.'s self-supervised loss only.

    python benchmarks/warp_accuracy.py --size 64 --steps 800 --threads 1 --test-pairs 32
    python benchmarks/warp_accuracy.py ... --match-window 0 --smoothing 0 --sharpness 3   # the global soft-argmax
    python benchmarks/warp_accuracy.py --size 256 --extractor vgg --vgg-weights vgg19.pth   # the paper's features

Real frames from ../shared/data/faces/ (centre square, resized to --size) are warped by random affine + thin-plate
transforms in the paper's ranges (scale 0.75-1.25, rotation ±15°, shear ±15°, translation ±0.4 of the half-width,
3x3 TPS control points moved by ±0.1). The correlation refiner (trainable feature encoder, warp network f, K
iterations) learns to warp the frame to its transformed copy from the search-window loss alone: no ground-truth
flow is ever used in training. f's matching path is a soft-argmax over a 5x5 window of source cells (0: the whole
field), smoothed by a Gaussian of 3 cells; f starts at zero (the identity warp) unless --match-init. Evaluation is
on frames of held-out videos with held-out transforms: the end-point error (EPE, in pixels at --size) of the
predicted backward field against the true one, over the pixels whose true source lies inside the frame, next to the
identity field's EPE. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reenact.families.correlation.feature_encoder import FeatureEncoder
from reenact.families.correlation.refiner import CorrelationRefiner
from reenact.families.correlation.volume import search_window_loss
from reenact.families.correlation.warp_network import CorrelationWarpNetwork
from reenact.layers.geometry import make_coordinate_grid, warp

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
TRAIN_VIDEOS = ("d0", "d3", "d6", "d9", "d10", "d11")
HELD_OUT_VIDEOS = ("d12", "d14")  # d13 is an uncropped desk scene


def load_frames(names: tuple[str, ...], per_video: int, size: int) -> torch.Tensor:
    """Evenly spaced frames of each video: centre square, area-resized to size; (N, 3, size, size) in [0, 1]."""
    from reenact.data.video import probe_video, read_frames

    frames = []
    for name in names:
        path = FACES / f"{name}.mp4"
        count = probe_video(path).num_frames
        indices = np.linspace(0, count - 1, per_video).round().astype(int).tolist()
        video = torch.from_numpy(read_frames(path, indices)).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
        h, w = video.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        video = video[..., top : top + side, left : left + side]
        frames.append(F.interpolate(video, size=(size, size), mode="area"))
    return torch.cat(frames)


def tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    return torch.where(r2 > 0, r2 * torch.log(r2.clamp_min(1e-12)), torch.zeros_like(r2))


def random_transforms(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Backward maps T (B, size, size, 2): a pixel z of the transformed frame shows the original at T(z)."""

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, *shape, generator=generator)

    grid = make_coordinate_grid((size, size)).view(1, -1, 2).expand(batch, -1, -1)  # (B, N, 2)
    # thin-plate spline through a 3x3 grid of control points, each moved by up to ±0.1
    control = make_coordinate_grid((3, 3)).view(1, 9, 2).expand(batch, -1, -1)  # (B, 9, 2)
    moved = uniform(-0.1, 0.1, 9, 2)
    kernel = tps_kernel(torch.cdist(control, control) ** 2)  # (B, 9, 9)
    ones = torch.ones(batch, 9, 1)
    affine_part = torch.cat([ones, control], dim=-1)  # (B, 9, 3)
    system = torch.cat([torch.cat([kernel, affine_part], -1),
                        torch.cat([affine_part.transpose(1, 2), torch.zeros(batch, 3, 3)], -1)], 1)  # (B, 12, 12)
    rhs = torch.cat([moved, torch.zeros(batch, 3, 2)], 1)  # (B, 12, 2)
    params = torch.linalg.solve(system, rhs)  # (B, 12, 2)
    basis = torch.cat([tps_kernel(torch.cdist(grid, control) ** 2), torch.ones(batch, grid.shape[1], 1), grid], -1)
    points = grid + basis @ params  # (B, N, 2)
    # affine: scale, rotation, shear, translation
    scale = uniform(0.75, 1.25)
    angle = uniform(-15, 15) * math.pi / 180
    shear = uniform(-15, 15) * math.pi / 180
    translation = uniform(-0.4, 0.4, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    shearing = torch.eye(2).repeat(batch, 1, 1)
    shearing[:, 0, 1] = torch.tan(shear)
    linear = scale.view(-1, 1, 1) * rotation @ shearing
    points = points @ linear.transpose(1, 2) + translation.view(batch, 1, 2)
    return points.view(batch, size, size, 2)


def endpoint_errors(field: torch.Tensor, truth: torch.Tensor, size: int) -> tuple[float, float]:
    """Mean EPE in pixels of the field and of the identity, over pixels whose true source is inside the frame."""
    valid = (truth.abs() <= 1).all(-1)  # (B, H, W)
    to_pixels = (size - 1) / 2
    identity = make_coordinate_grid((size, size)).expand_as(truth)
    predicted = ((field - truth).norm(dim=-1) * to_pixels)[valid].mean().item()
    still = ((identity - truth).norm(dim=-1) * to_pixels)[valid].mean().item()
    return predicted, still


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3, help="K refinement iterations")
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (1: the paper's)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--frames", type=int, default=24, help="frames per training video")
    parser.add_argument("--test-pairs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extractor", choices=["encoder", "vgg"], default="encoder",
                        help="trainable encoder, or VGG19 pool4 (frozen with --vgg-weights; 16x16 at 256x256)")
    parser.add_argument("--vgg-weights", default=None, help="a local ImageNet vgg19 state dict")
    parser.add_argument("--freeze-extractor", action="store_true", help="train the warp network f alone")
    parser.add_argument("--match-window", type=int, default=5,
                        help="f's soft-argmax window in feature cells (0: the whole field)")
    parser.add_argument("--smoothing", type=float, default=3.0, help="Gaussian of f's matching path, in cells")
    parser.add_argument("--sharpness", type=float, default=10.0, help="initial β of f's soft-argmax")
    parser.add_argument("--match-init", action="store_true",
                        help="f starts as its matching path (default: at zero, the identity warp, as the presets)")
    parser.add_argument("--extractor-lr", type=float, default=None, help="the extractor's learning rate (--lr)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not FACES.is_dir():
        print(f"no real frames at {FACES}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    size = args.size
    downs = int(round(math.log2(size / 16)))
    train_frames = load_frames(TRAIN_VIDEOS, args.frames, size)
    test_frames = load_frames(HELD_OUT_VIDEOS, args.test_pairs // len(HELD_OUT_VIDEOS), size)

    if args.extractor == "vgg":
        from reenact.families.correlation.vgg_pool4 import VGGPool4Features

        extractor = VGGPool4Features(weights_path=args.vgg_weights, grid_size=16)
    else:
        extractor = FeatureEncoder(block_expansion=16, max_features=64, num_down_blocks=downs, out_channels=32,
                                   grid_size=16)
    if args.freeze_extractor:
        extractor.requires_grad_(False)
    warp_network = CorrelationWarpNetwork(grid_size=16, hidden=64, num_layers=2, sharpness=args.sharpness,
                                          match_window=args.match_window or None, smoothing=args.smoothing,
                                          match_init=args.match_init)
    refiner = CorrelationRefiner(extractor, warp_network, iterations=args.iterations)
    extractor_lr = args.lr if args.extractor_lr is None else args.extractor_lr
    groups = [{"params": [p for p in warp_network.parameters() if p.requires_grad], "lr": args.lr}]
    if not args.freeze_extractor and extractor_lr > 0:
        groups.append({"params": [p for p in extractor.parameters() if p.requires_grad], "lr": extractor_lr})
    else:
        extractor.requires_grad_(False)
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    train_rng = torch.Generator().manual_seed(args.seed + 1)
    test_rng = torch.Generator().manual_seed(12345)  # held-out transforms, the same for every run
    test_truth = random_transforms(test_frames.shape[0], size, test_rng)
    test_warped = warp(test_frames, test_truth, padding_mode="border")

    def evaluate() -> tuple[float, float, float]:
        refiner.eval()
        with torch.no_grad():
            out = refiner(test_frames, refiner.encode(test_warped))
            loss = search_window_loss(out["warped_features"], out["target_features"], args.window,
                                      args.temperature).item()
        refiner.train()
        return (*endpoint_errors(out["deformation"], test_truth, size), loss)

    before = evaluate()
    start = time.perf_counter()
    losses = []
    for step in range(args.steps):
        index = torch.randint(0, train_frames.shape[0], (args.batch,), generator=train_rng)
        source = train_frames[index]
        if torch.rand(1, generator=train_rng).item() < 0.5:  # horizontal flips: more variety from few videos
            source = source.flip(-1)
        truth = random_transforms(args.batch, size, train_rng)
        target = warp(source, truth, padding_mode="border")  # the transformed frame: the geometry to reach
        out = refiner(source, refiner.encode(target))
        loss = search_window_loss(out["warped_features"], out["target_features"], args.window, args.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(1, args.steps // 10) == 0:
            epe, still, _ = evaluate()
            print(f"step {step + 1}: loss {np.mean(losses[-20:]):.4f}, held-out EPE {epe:.3f} / identity {still:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    seconds = time.perf_counter() - start
    after = evaluate()
    print(f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}; "
          f"{seconds:.0f} s for {args.steps} steps of batch {args.batch} at {size}x{size}, K={args.iterations}, "
          f"window {args.window}, temperature {args.temperature}, lr {args.lr} (extractor {extractor_lr}), "
          f"{args.extractor}{' (frozen)' if args.freeze_extractor else ''}; f: match window "
          f"{args.match_window or 'all'}, smoothing {args.smoothing}, sharpness {args.sharpness}, "
          f"{'match' if args.match_init else 'zero'} init; "
          f"{train_frames.shape[0]} training frames, {test_frames.shape[0]} held-out pairs")
    print("| field | held-out EPE (px) | EPE / identity EPE | search-window loss |")
    print("|---|---|---|---|")
    print(f"| identity | {after[1]:.3f} | 1.000 | |")
    print(f"| untrained refiner | {before[0]:.3f} | {before[0] / before[1]:.3f} | {before[2]:.4f} |")
    print(f"| trained refiner (self-supervised only) | {after[0]:.3f} | {after[0] / after[1]:.3f} | {after[2]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
