"""Train a face reenactment model: ``python train.py [overrides]`` (see reenact/entrypoints/train.py)."""

import os

# DataLoader workers share the CPU with the training threads; idle OpenMP threads that spin instead of sleeping
# made CPU steps up to 10x slower here (benchmarks/train_step.py). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from reenact.entrypoints.train import cli  # noqa: E402

if __name__ == "__main__":
    cli()
