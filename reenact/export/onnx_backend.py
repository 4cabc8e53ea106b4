"""Animate with an ONNX export directory through onnxruntime (CPU).

    from reenact.export import load_exported
    model = load_exported("exported/")                        # a PretrainedModel, as load_pretrained gives
    frames = model.animate(source_image, driving_frames)      # (3, H, W), (T, 3, H, W) -> (T, 3, H', W')

:class:`ExportedNetwork` is a :class:`ReenactmentFamily` whose networks are the exported graphs, so the whole
animation pipeline (:mod:`reenact.animation`) runs on it unchanged: ``encode_motion`` runs the motion encoder,
``render`` the source encoder (once per source image: a batch of one image, or one image expanded to the batch,
is encoded once and the encoding is kept while the image stays the same) and the renderer. Motion transfer, the
choice of the best reference frame and the keypoints to draw are the family's own methods on an instance built
from the manifest's model config, on PyTorch's meta device where its constructor allows (no weights allocated),
else on the CPU with untrained weights that are never used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reenact.export.exporter import require_onnxruntime
from reenact.export.graphs import (
    DRIVING_MOTION,
    ENCODING,
    MOTION,
    MOTION_ENCODER,
    RENDERER,
    SOURCE_ENCODER,
    SOURCE_MOTION,
    prefixed,
    unprefixed,
)
from reenact.export.manifest import ExportDirError, Manifest, read_manifest
from reenact.families.base import ModelOutput, Motion, ReenactmentFamily, UnknownFamilyError, get_family
from reenact.utils.messages import first_line


def build_motion_host(manifest: Manifest, where: str) -> ReenactmentFamily:
    """The family network of the manifest's model config on the meta device (its methods, no weights)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        get_family(manifest.family)
    except UnknownFamilyError as exc:
        raise ExportDirError(f"{where}: {exc}") from None
    config = OmegaConf.create(manifest.model_config["network"])
    try:
        try:
            with torch.device("meta"):
                host = instantiate(config)
        except Exception:  # a constructor that computes with its weights (an init scheme): build it on the CPU
            host = instantiate(config)
    except Exception as exc:  # a config this reenact cannot build: the export is of another version
        raise ExportDirError(f"{where}: cannot rebuild the {manifest.family} family from the manifest's model "
                             f"config ({first_line(exc)})") from None
    if not isinstance(host, ReenactmentFamily) or host.family != manifest.family:
        raise ExportDirError(f"{where} says family {manifest.family!r} but its model config builds "
                             f"{type(host).__qualname__}")
    return host.eval()


class ExportedNetwork(ReenactmentFamily):
    """The family contract on onnxruntime sessions of an export directory (CPU; no trainable parameters)."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.family = self.manifest.family  # an instance attribute: the exported family's name
        self.__dict__["host"] = build_motion_host(self.manifest, str(self.directory))  # not a submodule
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions: dict[str, Any] = {}
        for name, entry in self.manifest.graphs.items():
            path = self.directory / entry.file
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ExportDirError(f"onnxruntime cannot load {path}: {first_line(exc)}") from None
            declared_in, declared_out = set(entry.inputs), [o.name for o in session.get_outputs()]
            unknown = [i.name for i in session.get_inputs() if i.name not in declared_in]
            if unknown or declared_out != entry.outputs:
                raise ExportDirError(f"{path} does not match its manifest: inputs {unknown or 'as listed'}, outputs "
                                     f"{declared_out} (manifest: {entry.outputs}); export again")
            self.sessions[name] = session
        self._source_cache: tuple[torch.Tensor, dict[str, np.ndarray]] | None = None

    # ------------------------------------------------------------------ graphs
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        try:
            outputs = session.run(None, {spec.name: feeds[spec.name] for spec in session.get_inputs()})
        except KeyError as exc:
            raise ExportDirError(f"{self.directory}: the {graph} graph needs input {exc.args[0]}, which this "
                                 f"family's motion does not have; export again") from None
        return dict(zip(self.manifest.graphs[graph].outputs, outputs, strict=True))

    def encode_motion(self, frames: torch.Tensor) -> Motion:
        out = self._run(MOTION_ENCODER, {"frames": _numpy(frames)})
        names = self.manifest.graphs[MOTION_ENCODER].outputs
        return {key: torch.from_numpy(out[name]) for key, name in zip(unprefixed(MOTION, names), names, strict=True)}

    def compact_motion(self, motion: Motion) -> Motion:
        return {key: value.detach().float().cpu() for key, value in motion.items()}

    def _encode_source_numpy(self, source: torch.Tensor) -> dict[str, np.ndarray]:
        out = self._run(SOURCE_ENCODER, {"source": _numpy(source)})
        return {name.removeprefix(f"{ENCODING}."): value for name, value in out.items()}

    def encode_source(self, source: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: torch.from_numpy(value) for key, value in self._encode_source_numpy(source).items()}

    def _render_numpy(self, encoding: dict[str, np.ndarray], source_motion: Motion, driving_motion: Motion
                      ) -> torch.Tensor:
        feeds = {f"{ENCODING}.{k}": v for k, v in encoding.items()}
        feeds.update(zip(prefixed(SOURCE_MOTION, list(source_motion)), map(_numpy, source_motion.values()),
                         strict=True))
        feeds.update(zip(prefixed(DRIVING_MOTION, list(driving_motion)), map(_numpy, driving_motion.values()),
                         strict=True))
        return torch.from_numpy(self._run(RENDERER, feeds)["prediction"])

    def render_encoded(self, encoding: dict[str, torch.Tensor], source_motion: Motion, driving_motion: Motion
                       ) -> torch.Tensor:
        return self._render_numpy({k: _numpy(v) for k, v in encoding.items()}, source_motion, driving_motion)

    def render(self, source: torch.Tensor, source_motion: Motion, driving_motion: Motion) -> ModelOutput:
        """The prediction only (the exported renderer has no flow or occlusion outputs)."""
        batch = source.shape[0]
        if batch == 1 or source.stride(0) == 0:  # one image, or one expanded to the batch (what animation passes)
            encoding = {k: np.repeat(v, batch, axis=0) for k, v in self._cached_source(source[:1]).items()}
        else:
            encoding = self._encode_source_numpy(source)
        return {"prediction": self._render_numpy(encoding, source_motion, driving_motion)}

    def _cached_source(self, image: torch.Tensor) -> dict[str, np.ndarray]:
        if self._source_cache is None or not torch.equal(self._source_cache[0], image):
            self._source_cache = (image.clone(), self._encode_source_numpy(image))
        return self._source_cache[1]

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> ModelOutput:
        motion_source, motion_driving = self.encode_motion(source), self.encode_motion(driving)
        output = self.render(source, motion_source, motion_driving)
        output["motion_source"], output["motion_driving"] = motion_source, motion_driving
        return output

    # ------------------------------------------------------------------ the family's own arithmetic
    def check_transfer(self, mode: str | None, options: dict[str, Any] | None = None  # type: ignore[override]
                       ) -> tuple[str, dict[str, Any]]:
        return self.host.check_transfer(mode, options)

    def transfer_motion(self, source_motion: Motion, driving_motion: Motion, reference_motion: Motion, mode: str,
                        **options: Any) -> Motion:
        return self.host.transfer_motion(source_motion, driving_motion, reference_motion, mode, **options)

    def motion_smoothing(self, motion: Motion) -> dict[str, str]:
        return self.host.motion_smoothing(motion)

    def transfer_needs_landmarks(self, options: Mapping[str, Any]) -> bool:
        return self.host.transfer_needs_landmarks(options)

    def best_reference_frame(self, source_motion: Motion, driving_motion: Motion) -> int:
        return self.host.best_reference_frame(source_motion, driving_motion)

    def keypoints_2d(self, motion: Motion | None) -> torch.Tensor | None:
        return self.host.keypoints_2d(motion)

    def parameter_report(self) -> list:
        return []


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


def load_exported(directory: str | Path, expected_family: str | None = None, threads: int | None = None) -> Any:
    """A :class:`reenact.api.PretrainedModel` (``animate``, ``reconstruct``) running an export directory on
    onnxruntime; ``expected_family`` makes an export of another family fail with one line."""
    from reenact.api import PretrainedModel

    manifest = read_manifest(directory, check_files=False)
    if expected_family is not None and manifest.family != expected_family:
        raise ExportDirError(f"export {directory} holds a {manifest.family!r} model, not the requested "
                             f"{expected_family!r}")
    network = ExportedNetwork(directory, threads)
    return PretrainedModel(network, manifest.frame_size, torch.device("cpu"), manifest.model_config)
