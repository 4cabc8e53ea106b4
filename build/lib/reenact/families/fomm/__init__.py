"""The FOMM family (first-order motion model): 2D keypoints with Jacobians, dense motion with occlusion,
occlusion-aware generator. Importing the package registers the family."""

from reenact.families.fomm.model import FirstOrderMotionModel

__all__ = ["FirstOrderMotionModel"]
