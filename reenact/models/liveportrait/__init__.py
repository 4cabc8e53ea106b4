"""LivePortrait-style 3D warping model: F (appearance), M (motion), W (warping), G (SPADE decoder)."""

from reenact.models.liveportrait.appearance_feature_extractor import AppearanceFeatureExtractor
from reenact.models.liveportrait.dense_motion_3d import DenseMotionNetwork, DenseMotionParams
from reenact.models.liveportrait.model import LivePortraitModel
from reenact.models.liveportrait.motion_extractor import MotionExtractor
from reenact.models.liveportrait.spade_decoder import SPADEDecoder
from reenact.models.liveportrait.warping_network import WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor",
    "DenseMotionNetwork",
    "DenseMotionParams",
    "LivePortraitModel",
    "MotionExtractor",
    "SPADEDecoder",
    "WarpingNetwork",
]
