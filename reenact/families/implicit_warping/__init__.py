"""Implicit cross-attention warping (Mallya, Wang, Liu, NeurIPS 2022, "Implicit Warping for Animation with Image
Sets"): one cross-modal attention layer finds correspondences and warps at once, over any number of source images.
Importing the package registers the family."""

from reenact.families.implicit_warping.model import ImplicitWarpingModel

__all__ = ["ImplicitWarpingModel"]
