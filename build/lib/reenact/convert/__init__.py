"""Import the official FOMM and LivePortrait weights as reenact checkpoints.

    python -m reenact.convert fomm vox-cpk.pth.tar fomm_vox256.ckpt
    python -m reenact.convert liveportrait pretrained_weights/liveportrait/base_models liveportrait.ckpt

The output is a checkpoint in the training task's layout: ``train.py model.init_from=OUT`` fine-tunes from it,
and ``reenact.evaluate``, ``reenact.animate`` and :func:`reenact.api.load_pretrained` use it directly. Sources
are read as data only (``torch.load(weights_only=True)`` or safetensors). See ``docs/pretrained.md``.
"""

from reenact.convert.keymap import ConversionError, ConversionReport
from reenact.families.fomm.convert import convert_fomm
from reenact.families.liveportrait.convert import convert_liveportrait

__all__ = ["ConversionError", "ConversionReport", "convert_fomm", "convert_liveportrait"]
