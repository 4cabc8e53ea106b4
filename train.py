"""Train a face reenactment model: ``python train.py [overrides]`` (see reenact/cli/train.py)."""

from reenact.cli.train import cli

if __name__ == "__main__":
    cli()
