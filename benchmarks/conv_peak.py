"""How close this CPU's fp32 3x3 convolutions run to its matmul peak, and what NNPACK's Winograd path gives.

    python benchmarks/conv_peak.py
    python benchmarks/conv_peak.py --shapes 2x256x64 1x512x64 --repeats 7

Issue 17 asks a CPU training step to be 2.5x faster than the fp32 eager step with the same math. This prints the
evidence for what bounds it on the machine at hand:

- the fp32 matmul rate (GFLOP/s) of a square matrix product, the practical peak of the BLAS/oneDNN kernels;
- for each convolution shape of the 256x256 presets (batch x channels x size, 3x3, stride 1, "same" padding), the
  rate of PyTorch's convolution forward and forward+backward, channels-first and channels-last;
- the same layer routed through NNPACK's Winograd F(6x6, 3x3) (``model.nnpack=true``, :mod:`reenact.utils.nnpack`):
  forward and forward+backward time as a ratio to PyTorch's (below 1 is faster) and its largest relative error.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from reenact.utils.nnpack import nnpack_runs, use_nnpack


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _convolution_row(shape: str, repeats: int) -> str:
    """One table row: PyTorch's and NNPACK's convolution of one shape ("N x C x size")."""
    n, c, size = (int(v) for v in shape.split("x"))
    plain = nn.Conv2d(c, c, 3, padding=1)
    routed = copy.deepcopy(plain)
    use_nnpack(routed, min_channels=1, min_pixels=1)
    x = torch.randn(n, c, size, size, requires_grad=True)
    x_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(n, c, size, size)
    flop = 2 * n * c * c * 9 * size * size  # one forward; a backward costs two

    def step(conv: nn.Module, inp: torch.Tensor) -> Callable[[], None]:
        return lambda: conv(inp).backward(grad)

    with torch.no_grad():
        fwd = _median_seconds(lambda: plain(x), repeats)
        reference = plain(x)
        if nnpack_runs():
            nnpack_fwd = _median_seconds(lambda: routed(x), repeats)
            error = ((routed(x) - reference).abs().max() / reference.abs().max()).item()
    both = _median_seconds(step(plain, x), repeats)
    both_last = _median_seconds(step(plain, x_last), repeats)
    row = f"| {shape} | {flop / fwd / 1e9:.0f} | {3 * flop / both / 1e9:.0f} | {3 * flop / both_last / 1e9:.0f} |"
    if not nnpack_runs():
        return row + " - | - | - |"
    nnpack_both = _median_seconds(step(routed, x), repeats)
    return row + f" {nnpack_fwd / fwd:.2f} | {nnpack_both / both:.2f} | {error:.1e} |"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes = ["2x64x256", "2x128x128", "2x256x64", "2x512x32", "1x512x64", "1x256x128"]
    parser.add_argument("--shapes", nargs="+", default=shapes,
                        help="batch x channels x size of each 3x3 convolution (channels in = out)")
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.manual_seed(0)
    nnpack = "runs" if nnpack_runs() else "does not run"
    print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; NNPACK {nnpack} here")
    print()
    print("| matmul | GFLOP/s |\n|---|---|")
    for size in (1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        seconds = _median_seconds(lambda a=a, b=b: a @ b, args.repeats)
        print(f"| {size}x{size} fp32 | {2 * size**3 / seconds / 1e9:.0f} |")
    print()
    print("| conv 3x3 (N x C x size) | fwd GFLOP/s | fwd+bwd GFLOP/s | channels-last fwd+bwd GFLOP/s | "
          "NNPACK fwd (x PyTorch) | NNPACK fwd+bwd (x PyTorch) | NNPACK max rel. error |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        print(_convolution_row(shape, args.repeats))


if __name__ == "__main__":
    main()
