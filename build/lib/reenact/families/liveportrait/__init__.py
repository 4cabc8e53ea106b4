"""The LivePortrait-style 3D warping family: appearance feature volume F, motion extractor M, warping network W,
SPADE decoder G. Importing the package registers the family."""

from reenact.families.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from reenact.families.liveportrait.dense_motion_3d import DenseMotionNetwork3d, DenseMotionParams
from reenact.families.liveportrait.model import LivePortraitModel
from reenact.families.liveportrait.motion_extractor import MotionExtractor
from reenact.families.liveportrait.spade_decoder import SPADEDecoder
from reenact.families.liveportrait.warping_network import WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor",
    "DenseMotionNetwork3d",
    "DenseMotionParams",
    "LivePortraitModel",
    "MotionExtractor",
    "SPADEDecoder",
    "WarpingNetwork",
]
