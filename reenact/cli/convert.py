"""``python -m reenact.convert {fomm,liveportrait} SOURCE OUT.ckpt [--preset NAME] [model.KEY=VALUE ...]``.

fomm: SOURCE is the original checkpoint file (e.g. vox-cpk.pth.tar). liveportrait: SOURCE is the folder holding
appearance_feature_extractor, motion_extractor, warping_module and spade_generator (.pth or .safetensors), or
the HuggingFace download containing liveportrait/base_models. Trailing ``model.*`` overrides change the preset
(e.g. for a checkpoint trained at other sizes). Errors are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from reenact.cli import user_errors
from reenact.families.base import registered_families
from reenact.utils.messages import first_line


def converters() -> dict[str, tuple[Callable[..., Any], str]]:
    """(convert function, default preset) of every registered family that can import published weights."""
    found = {}
    for name, family in registered_families().items():
        if family.converter is not None:
            module, function = family.converter.split(":")
            found[name] = (getattr(importlib.import_module(module), function), family.converter_preset or name)
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reenact.convert", description="Import official FOMM / LivePortrait weights."
    )
    parser.add_argument("format", choices=sorted(converters()), help="which family's release SOURCE comes from")
    parser.add_argument("source", help="fomm: the checkpoint file; liveportrait: the folder of base models")
    parser.add_argument("out", help="the reenact checkpoint to write (.ckpt)")
    parser.add_argument("overrides", nargs="*", help="model.* config overrides, as for train.py")
    parser.add_argument("--preset", default=None, help="model preset (default: fomm_vox256 / liveportrait)")
    parser.add_argument("--frame-size", type=int, default=256, help="input frame size stored for inference")
    return parser.parse_intermixed_args(argv)  # overrides may follow the options


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    convert, default_preset = converters()[args.format]
    # ConversionError is a ReenactError; OSError: the paths given
    with user_errors(first_line, also=(OSError,), exit=False) as reported:
        report = convert(
            args.source, args.out, preset=args.preset or default_preset, overrides=args.overrides,
            frame_size=args.frame_size,
        )
    if reported.status:
        return reported.status
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
