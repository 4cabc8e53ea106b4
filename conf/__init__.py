"""Hydra configs of reenact, one folder per config group. In a source checkout this is the top-level conf/; a wheel
installs it as the package reenact.conf (setup.py), so that an installed copy composes the same files."""
