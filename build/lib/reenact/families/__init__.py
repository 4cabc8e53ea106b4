"""Model families as plug-ins: the contract (:mod:`reenact.families.base`) and one package per family."""

from reenact.families.base import (
    ModelOutput,
    Motion,
    ReenactmentFamily,
    UnknownFamilyError,
    get_family,
    register_family,
    registered_families,
)

__all__ = [
    "ModelOutput",
    "Motion",
    "ReenactmentFamily",
    "UnknownFamilyError",
    "get_family",
    "register_family",
    "registered_families",
]
