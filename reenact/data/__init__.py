"""Data: video I/O (`video`), the built-in synthetic dataset (`synthetic`), pair and whole-video datasets
(`datasets`), FOMM augmentations (`augmentation`) and the Lightning data module (`datamodule`)."""
