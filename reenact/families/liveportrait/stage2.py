"""LivePortrait's second training stage: what the stitching and retargeting networks are trained on.

F, M, W and G are frozen (their optimiser groups are ``frozen`` in ``experiment=liveportrait_stage2``, which also
keeps their BatchNorm statistics fixed); they run here only to render, and gradients reach the keypoint offsets
through W and G. From the paper's description (stage II, cross-identity stitching and ratio-conditioned
retargeting), for a batch of same-clip (source, driving) pairs:

- **stitching**: each source is driven by *another* sample's driving frame (cross-identity: the driving pose,
  expression, scale and translation on the source's canonical keypoints). S corrects those keypoints; the render must
  equal the source image in a band along the crop border (where a pasted-back crop meets the full image: shoulders,
  background), away from the face: ``stitching_render`` (B, 3, H', W'), ``stitching_region`` (B, 1, H', W') in
  [0, 1], ``stitching_offset`` (B, K, 3) (the change S makes, for its regulariser).
- **eye / lip retargeting** (needs ``source_landmarks`` and ``driving_landmarks`` in the batch): the network gets the
  source's ratios and, as the requested ratio, the driving frame's (same clip: a real frame with that openness). Its
  offset of the source keypoints must reach the keypoints of the source with the driving frame's expression on the
  keypoints near the eyes (the mouth): ``<part>_target`` (B, K, 3) = s_s (delta_d - delta_s) weighted by each
  keypoint's nearness to the region (``<part>_weights`` (B, K, 1)); the render of the offset keypoints must keep the
  source outside the region (``<part>_render``, ``<part>_region``); and ``<part>_offset`` (B, K, 3) feeds the
  regulariser. Samples whose landmarks are missing (NaN) get zero weights and an empty region.

``prediction`` is the stitched render (or the first retargeting render) for logging.
"""

from __future__ import annotations

from typing import Any

import torch

from reenact.families.base import ModelOutput
from reenact.families.liveportrait.keypoint_transform import motion_to_keypoints, transform_keypoints
from reenact.families.liveportrait.ratios import eye_ratios, lip_ratio, region_centres
from reenact.layers.geometry import make_coordinate_grid

BORDER = 0.2  # the stitching band: this fraction of the crop's side along each edge
FACE_MARGIN = 0.25  # the face ellipse (the landmarks' box) grown by this fraction of its size on each side
REGION_SCALE = {"eye": 0.75, "lip": 0.75}  # region radius in units of the eye / mouth width


def border_band(size: tuple[int, int], batch: int, device: torch.device, border: float = BORDER) -> torch.Tensor:
    """(B, 1, H, W): 1 within ``border`` of the crop's side from any edge, else 0."""
    grid = make_coordinate_grid(size, device=device)  # (H, W, 2) in [-1, 1]
    band = (grid.abs().amax(-1) > 1.0 - 2.0 * border).float()
    return band[None, None].expand(batch, 1, *size)


def face_ellipse(landmarks: torch.Tensor, size: tuple[int, int], margin: float = FACE_MARGIN) -> torch.Tensor:
    """(B, L, 2) normalised landmarks -> (B, 1, H, W): 1 inside the ellipse around their box (grown by ``margin``);
    a sample with missing landmarks covers nothing."""
    finite = torch.isfinite(landmarks).all(-1).all(-1)  # (B,)
    points = torch.nan_to_num(landmarks)
    low, high = points.amin(1), points.amax(1)  # (B, 2)
    centre, half = (low + high) / 2, ((high - low) / 2 * (1 + 2 * margin)).clamp_min(1e-3)
    grid = make_coordinate_grid(size, device=landmarks.device)  # (H, W, 2)
    inside = (((grid[None] - centre[:, None, None]) / half[:, None, None]) ** 2).sum(-1) <= 1.0  # (B, H, W)
    return (inside & finite[:, None, None]).float()[:, None]


def disc_mask(centres: torch.Tensor, radius: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, 2) centres, (B, 1) radius -> (B, 1, H, W): 1 inside any of the discs."""
    grid = make_coordinate_grid(size, device=centres.device)  # (H, W, 2)
    distance = (grid[None, None] - centres[:, :, None, None]).norm(dim=-1)  # (B, C, H, W)
    return (distance <= radius[:, :, None, None]).any(1, keepdim=True).float()


def keypoint_weights(keypoints: torch.Tensor, centres: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) keypoints, (B, C, 2) region centres, (B, 1) radius -> (B, K, 1) in [0, 1]: a Gaussian of each
    keypoint's distance to the nearest centre, 1 at a centre, exp(-1/2) at ``radius``."""
    distance = (keypoints[:, :, None] - centres[:, None]).norm(dim=-1).amin(-1, keepdim=True)  # (B, K, 1)
    return torch.exp(-0.5 * (distance / radius[:, None].clamp_min(1e-3)) ** 2)


def second_stage_forward(model: Any, batch: dict[str, Any]) -> ModelOutput:
    """The stage-2 outputs (see the module docstring) of a :class:`LivePortraitModel` for a training batch."""
    model.first_stage_to_eval()  # frozen: BatchNorm uses (and keeps) its running statistics
    source, driving = batch["source"], batch["driving"]
    count = source.shape[0]
    with torch.no_grad():  # stage 1 is frozen: its motion and F's volume carry no gradient
        both = model.motion_extractor(torch.cat([source, driving], dim=0))
        kp_s = motion_to_keypoints({k: v[:count] for k, v in both.items()})
        kp_d = motion_to_keypoints({k: v[count:] for k, v in both.items()}, kp_canonical=kp_s["kp_canonical"])
        feature_3d, levels = model.appearance_feature_extractor.encode(source)
    x_s = kp_s["value"]  # (B, K, 3)
    output: dict[str, Any] = {"motion_source": kp_s, "motion_driving": kp_d}

    def render(kp_driving: torch.Tensor) -> torch.Tensor:
        return model._warp_and_decode(feature_3d, levels, kp_s, kp_driving, source)[1]  # (B, 3, H', W')

    renders = []
    if model.stitching_network is not None:
        other = (torch.arange(count, device=source.device) + 1) % count  # each source driven by the next sample
        x_d = transform_keypoints(kp_s["kp_canonical"], kp_d["rotation"][other], kp_d["exp"][other],
                                  kp_d["scale"][other], kp_d["t"][other])
        stitched = model.stitching_network.stitch(x_s, x_d)
        prediction = render(stitched)
        size = tuple(prediction.shape[-2:])
        region = border_band(size, count, source.device)
        if batch.get("source_landmarks") is not None:
            region = region * (1.0 - face_ellipse(batch["source_landmarks"].to(x_s), size))
        output.update(stitching_render=prediction, stitching_region=region, stitching_offset=stitched - x_d)
        renders.append(prediction)
    for part, network in (("eye", model.eye_retargeting_network), ("lip", model.lip_retargeting_network)):
        if network is None:
            continue
        landmarks_s, landmarks_d = batch.get("source_landmarks"), batch.get("driving_landmarks")
        if landmarks_s is None or landmarks_d is None:
            raise ValueError(f"training the {part} retargeting network needs source_landmarks and driving_landmarks "
                             f"in the batch (data with landmark side files, e.g. the synthetic faces or "
                             f"`reenact.prepare ... --landmarks`)")
        landmarks_s, landmarks_d = landmarks_s.to(x_s), landmarks_d.to(x_s)
        if part == "eye":
            condition = torch.cat([eye_ratios(landmarks_s), eye_ratios(landmarks_d).mean(-1, keepdim=True)], 1)
        else:
            condition = torch.cat([lip_ratio(landmarks_s), lip_ratio(landmarks_d)], 1)
        valid = torch.isfinite(condition).all(-1) & torch.isfinite(landmarks_s).all(-1).all(-1)  # (B,)
        condition = torch.nan_to_num(condition)
        centres, width = region_centres(torch.nan_to_num(landmarks_s), part)
        radius = width * REGION_SCALE[part]
        weights = keypoint_weights(x_s[..., :2], centres, radius) * valid[:, None, None]  # (B, K, 1)
        # the driving frame's expression change near the region, at the source's scale: x = s (x_c R + delta) + t
        target = kp_s["scale"][:, :, None] * (kp_d["exp"] - kp_s["exp"]) * weights
        offset = network.delta(x_s, condition)  # (B, K, 3)
        prediction = render(x_s + offset)
        size = tuple(prediction.shape[-2:])
        region = (1.0 - disc_mask(centres, radius, size)) * valid[:, None, None, None]
        output.update({f"{part}_render": prediction, f"{part}_region": region, f"{part}_offset": offset,
                       f"{part}_target": target, f"{part}_weights": weights})
        renders.append(prediction)
    output["prediction"] = renders[0]
    return output  # type: ignore[return-value]
