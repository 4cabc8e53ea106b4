"""The TPSMM family (Thin-Plate Spline Motion Model): 50 keypoints as 10 thin-plate splines, a background affine,
multi-resolution occlusion, an inpainting generator and the AVD network. Importing the package registers it."""

from reenact.families.tpsmm.model import ThinPlateSplineMotionModel

__all__ = ["ThinPlateSplineMotionModel"]
