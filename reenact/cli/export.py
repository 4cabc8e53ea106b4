"""Export entry point: ``python -m reenact.export ckpt_path=RUN_OR_CKPT output=DIR`` (console script
``reenact-export``).

    python -m reenact.export ckpt_path=logs/train/runs/<run> output=exported/
    python -m reenact.export ckpt_path=model.ckpt output=exported/ exporter=dynamo

Writes ``source_encoder.onnx``, ``motion_encoder.onnx``, ``renderer.onnx`` and ``manifest.json`` into ``output``
and checks each graph against PyTorch with onnxruntime. Options and defaults: ``conf/export.yaml``. A bad
checkpoint, a family that cannot be exported (naming the operator) or a missing onnxruntime is one line with
exit code 2. ``run(cfg)`` holds the logic, so tests call it without Hydra's ``main``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from reenact.cli import user_errors, with_override_check
from reenact.export.manifest import ExportError, Manifest
from reenact.utils.hydra_utils import CONFIG_PATH, VERSION_BASE

REQUIRED = ("ckpt_path", "output")


def run(cfg: DictConfig) -> Manifest:
    for key in REQUIRED:
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ExportError(f"{key} is required: python -m reenact.export ckpt_path=CKPT output=DIR")
    from reenact.export.exporter import export_checkpoint

    manifest = export_checkpoint(cfg.ckpt_path, cfg.output, opset=int(cfg.opset), exporter=str(cfg.exporter),
                                 verify=bool(cfg.verify), tolerance=float(cfg.tolerance))
    diffs = ", ".join(f"{name} {diff:.2g}" for name, diff in manifest.verified_max_abs_diff.items())
    print(f"wrote the {manifest.family} model ({manifest.frame_size}x{manifest.frame_size}) to {cfg.output}: "
          f"{', '.join(entry.file for entry in manifest.graphs.values())}, manifest.json"
          + (f"; onnxruntime vs PyTorch max abs diff: {diffs}" if diffs else ""))
    return manifest


@with_override_check
@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
