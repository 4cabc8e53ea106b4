"""The correlation family (keypoint-free): learned correlation warping of the source's features toward the driving
frame's geometry, then an occlusion-aware decoder. Importing the package registers the family."""

from reenact.families.correlation.model import CorrelationWarpModel

__all__ = ["CorrelationWarpModel"]
