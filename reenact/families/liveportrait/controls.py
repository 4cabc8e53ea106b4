"""LivePortrait's second stage at animation time: from the animation options (stitching, eye / lip ratio, closed
lips) to the control entries of the transferred motion that the renderer applies (the networks' inputs and weights).

Every second-stage network the model has always gets its entries, with weight 0 where its option is off, so that an
exported renderer has the same inputs whatever is asked.
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.errors import ReenactError
from reenact.families.base import Motion
from reenact.families.liveportrait import ratios as measure


class SecondStageError(ReenactError, ValueError):
    """A stitching or retargeting option this model or its inputs cannot serve."""


def second_stage_controls(networks: dict[str, nn.Module], source_motion: Motion, driving_motion: Motion,
                          batch: int, stitching: bool | None = None, eye_ratio: float | str | None = None,
                          lip_ratio: float | str | None = None, lip_normalize: bool = False,
                          paste_back: bool = False) -> Motion:
    """The control entries (batch B) that ``LivePortraitModel.retargeted_keypoints`` applies when rendering, one set
    per second-stage network in ``networks`` (by attribute name: ``stitching_network``, ...; weights 0 where an option
    is off), so that the renderer's inputs are the same whatever is asked. ``stitching`` None: on when the output is
    pasted back. ``eye_ratio`` / ``lip_ratio``: a number (the openness to reach on every frame) or ``"driving"`` (each
    driving frame's own); ``lip_normalize``: close the source's lips first (the lip network with a requested ratio of
    0). Ratios come from the ``landmarks`` entries (B, 68, 2) of the source's and the driving frames' motion
    (:mod:`reenact.families.liveportrait.ratios`); a driving frame without landmarks (NaN) is not retargeted."""
    reference = source_motion["value"]
    ones = reference.new_ones(batch, 1)
    controls: Motion = {}
    asked = {"stitching": "stitching_network" if stitching else None,
             "eye_ratio": "eye_retargeting_network" if eye_ratio is not None else None,
             "lip_ratio": "lip_retargeting_network" if lip_ratio is not None else None,
             "lip_normalize": "lip_retargeting_network" if lip_normalize else None}
    for option, name in asked.items():
        if name is not None and name not in networks:
            raise SecondStageError(f"{option} needs the LivePortrait {name.replace('_', ' ')}, which this "
                                   f"checkpoint does not have (convert with retargeting_models/ beside the base "
                                   f"models, or train it: experiment=liveportrait_stage2)")
    if lip_ratio is not None and lip_normalize:
        raise SecondStageError("lip_normalize closes the lips before driving; lip_ratio sets their openness: "
                               "give one of them")
    if "stitching_network" in networks:
        on = paste_back if stitching is None else bool(stitching)
        controls["stitching"] = ones * float(on)

    def ratios(motion: Motion, part: str, who: str) -> torch.Tensor:
        if "landmarks" not in motion:
            raise SecondStageError(f"{part}_ratio / lip_normalize need the {who}'s facial landmarks, which the "
                                   f"animation did not provide")
        points = motion["landmarks"].to(reference)
        return measure.eye_ratios(points) if part == "eye" else measure.lip_ratio(points)

    def requested(value: float | str, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1) requested ratios and (B, 1) weights."""
        if isinstance(value, str):
            if value != "driving":
                raise SecondStageError(f"{part}_ratio={value!r}; give a number or 'driving'")
            measured = ratios(driving_motion, part, "driving video")  # (B, 2) eyes or (B, 1) lip
            target = measured.mean(-1, keepdim=True)
            found = torch.isfinite(target)
            return torch.nan_to_num(target), found.to(target)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value:
            raise SecondStageError(f"{part}_ratio={value!r}; give a non-negative number or 'driving'")
        return ones * float(value), ones

    if "eye_retargeting_network" in networks:
        condition, weight = reference.new_zeros(batch, 3), ones * 0.0
        if eye_ratio is not None:
            source_eyes = ratios(source_motion, "eye", "source")[:1].expand(batch, -1)  # (B, 2)
            if not torch.isfinite(source_eyes).all():
                raise SecondStageError("eye_ratio: no facial landmarks were found in the source image")
            target, weight = requested(eye_ratio, "eye")
            condition = torch.cat([source_eyes, target], dim=1)
        controls["eye_condition"], controls["eye_weight"] = condition, weight
    if "lip_retargeting_network" in networks:
        condition, weight = reference.new_zeros(batch, 2), ones * 0.0
        if lip_ratio is not None or lip_normalize:
            source_lip = ratios(source_motion, "lip", "source")[:1].expand(batch, -1)  # (B, 1)
            if not torch.isfinite(source_lip).all():
                raise SecondStageError("lip_ratio / lip_normalize: no facial landmarks were found in the source "
                                       "image")
            target, weight = requested(0.0 if lip_normalize else lip_ratio, "lip")  # type: ignore[arg-type]
            condition = torch.cat([source_lip, target], dim=1)
        controls["lip_condition"], controls["lip_weight"] = condition, weight
    return controls
