"""Compare the weights of two training checkpoints: are two runs (e.g. before and after a refactor) identical?

    python benchmarks/compare_checkpoints.py RUN_A/checkpoints/last.ckpt RUN_B/checkpoints/last.ckpt

Prints one row per checkpoint pair: tensors compared, keys only in one, largest absolute difference, and whether every
tensor is bit-identical. Exit status 0 when they are, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import torch


def compare(path_a: str, path_b: str) -> dict[str, object]:
    a = torch.load(path_a, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(path_b, map_location="cpu", weights_only=True)["state_dict"]
    shared = [k for k in a if k in b]
    largest = max(((a[k].double() - b[k].double()).abs().max().item() for k in shared if a[k].numel()), default=0.0)
    return {
        "tensors": len(shared),
        "only_in_one": len(set(a) ^ set(b)),
        "max_abs_diff": largest,
        "identical": all(torch.equal(a[k], b[k]) for k in shared) and set(a) == set(b),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args()
    row = compare(args.a, args.b)
    print(f"{'tensors':>8} {'only in one':>12} {'max |a-b|':>12} {'bit-identical':>14}")
    print(f"{row['tensors']:>8} {row['only_in_one']:>12} {row['max_abs_diff']:>12.3g} {str(row['identical']):>14}")
    return 0 if row["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
