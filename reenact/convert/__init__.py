"""Import the official FOMM and LivePortrait weights as reenact checkpoints.

    python -m reenact.convert fomm vox-cpk.pth.tar fomm_vox256.ckpt
    python -m reenact.convert liveportrait pretrained_weights/liveportrait/base_models liveportrait.ckpt

The output is a checkpoint in the training task's layout: ``train.py model.init_from=OUT`` fine-tunes from it,
and ``reenact.evaluate``, ``reenact.animate`` and :func:`reenact.api.load_pretrained` use it directly. Sources
are read as data only (``torch.load(weights_only=True)`` or safetensors). See ``docs/pretrained.md``.

This package holds what every converter shares (key maps, reading sources, writing the checkpoint); each family's
converter lives in its own package and is named by the family's ``converter`` attribute, so the command line finds
it through the registry.
"""

from reenact.convert.keymap import ConversionError, ConversionReport

__all__ = ["ConversionError", "ConversionReport"]
