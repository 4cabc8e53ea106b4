"""FOMM relative-motion keypoint normalisation for animation (the paper's "relative motion transfer").

Instead of copying the driving keypoints (which would also copy the driving face's shape), the source
keypoints are moved by the driving video's motion since its first frame:
    kp_new = kp_src + s * (kp_drv - kp_drv_initial)
    J_new  = (J_drv J_drv_initial^{-1}) J_src
where s = sqrt(area(hull(kp_src)) / area(hull(kp_drv_initial))) if adapt_movement_scale, else 1.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from reenact.families.fomm.dense_motion import inverse_2x2


def _hull_areas(points: torch.Tensor, name: str) -> torch.Tensor:
    """Convex-hull area of each sample's keypoints; (B, K, 2) -> (B,) float32 on the input device."""
    areas = []
    for i, sample in enumerate(points.detach().float().cpu().numpy()):
        try:
            areas.append(ConvexHull(sample).volume)  # in 2D the hull "volume" is its area
        except QhullError as error:
            raise ValueError(
                f"{name}['value'][{i}] has a degenerate convex hull (collinear or too few "
                f"keypoints): {str(error).splitlines()[0]}"
            ) from error
    return torch.as_tensor(np.asarray(areas), dtype=torch.float32, device=points.device)


def normalize_kp(
    kp_source: dict,
    kp_driving: dict,
    kp_driving_initial: dict,
    adapt_movement_scale: bool = False,
    use_relative_movement: bool = True,
    use_relative_jacobian: bool = True,
) -> dict:
    """Keypoints to feed the generator for animating kp_source by kp_driving's motion.

    Dicts hold "value" (B, K, 2) and optionally "jacobian" (B, K, 2, 2). As in the reference, the Jacobian is
    made relative only together with the movement (``use_relative_jacobian`` is ignored without
    ``use_relative_movement``); otherwise the driving entries pass through unchanged. The movement scale is
    computed per sample.
    """
    kp_new = dict(kp_driving)
    if not use_relative_movement:
        return kp_new

    value_src = kp_source["value"]
    scale = torch.ones(value_src.shape[0], dtype=value_src.dtype, device=value_src.device)
    if adapt_movement_scale:
        source_area = _hull_areas(value_src, "kp_source")
        driving_area = _hull_areas(kp_driving_initial["value"], "kp_driving_initial")
        scale = (source_area.sqrt() / driving_area.sqrt()).to(value_src.dtype)  # (B,)

    movement = kp_driving["value"] - kp_driving_initial["value"]  # (B, K, 2)
    kp_new["value"] = value_src + movement * scale.view(-1, 1, 1)

    if use_relative_jacobian and "jacobian" in kp_driving:
        for name, kp in (("kp_source", kp_source), ("kp_driving_initial", kp_driving_initial)):
            if "jacobian" not in kp:
                raise ValueError(f"use_relative_jacobian needs a 'jacobian' entry in {name}")
        jacobian_dtype = kp_driving["jacobian"].dtype
        relative = kp_driving["jacobian"].float() @ inverse_2x2(
            kp_driving_initial["jacobian"]
        )  # (B, K, 2, 2)
        kp_new["jacobian"] = (relative @ kp_source["jacobian"].float()).to(jacobian_dtype)
    return kp_new
