"""Packaging beside pyproject.toml: the top-level conf/ folder (the Hydra configs) ships inside the package as
reenact/conf, so that an installed copy composes the same configs as a source checkout."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["reenact", "reenact.*"]), "reenact.conf"],
    package_dir={"reenact.conf": "conf"},
    package_data={"reenact.conf": ["*.yaml", "**/*.yaml"]},
)
