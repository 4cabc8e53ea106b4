"""Data: video I/O (`video`), the built-in synthetic dataset (`synthetic`), pair and whole-video datasets
(`datasets`), FOMM augmentations (`augmentation`), epoch-keyed sampling (`sampling`) and the Lightning data
module (`datamodule`)."""
