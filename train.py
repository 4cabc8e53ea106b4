"""Train a face reenactment model: ``python train.py [overrides]`` (see reenact/entrypoints/train.py)."""

from reenact.entrypoints.train import cli

if __name__ == "__main__":
    cli()
