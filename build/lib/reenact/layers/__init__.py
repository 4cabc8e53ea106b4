"""Layers that several model families use: coordinate grids and warps, 2D hourglass blocks, the discriminator."""
