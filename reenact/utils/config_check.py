"""Start-up validation of a composed config: every wrong key or wrongly typed value fails before training.

Hydra already rejects overrides of keys that do not exist in the composed config. What it cannot catch is a
key that exists in a YAML file but not in the class it configures (a typo in an experiment file), or a value of
the wrong type (``model.network.kp_detector.num_kp=ten``). Because every class that configs instantiate takes
explicit, typed constructor arguments, the constructor signatures *are* the schema: this module walks each
``_target_`` node and checks its keys and values against the target's signature.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """A configuration problem; its message is one line naming the offending key."""


def import_target(path: str, where: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}._target_: cannot import '{path}' ({exc})") from None


def _type_matches(value: Any, annotation: Any) -> bool:
    """Best-effort structural check of a plain config value against a type hint."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if value is None:
        return False
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, list | tuple | ListConfig):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_matches(v, a) for v, a in zip(value, args, strict=True))
        element = args[0] if args else Any
        return all(_type_matches(v, element) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or annotation is dict:
        if not isinstance(value, dict | DictConfig):
            return False
        if len(args) == 2:
            return all(_type_matches(v, args[1]) for v in value.values())
        return True
    if isinstance(value, dict | DictConfig):
        # a nested node (instantiated or a partial) is checked on its own; a Callable/nn.Module type is fine here
        return True
    if inspect.isclass(annotation):
        try:
            return isinstance(value, annotation)
        except TypeError:
            return True
    return True  # Callable, TypeVars, Protocols: not checked structurally


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _check_node(node: DictConfig, where: str) -> None:
    target = import_target(str(node["_target_"]), where)
    func: Callable[..., Any] = target
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolved forward references: fall back to raw annotations
        hints = {}
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    is_partial = bool(node.get("_partial_", False))
    for key in node.keys():
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        if key not in params and not accepts_any:
            allowed = ", ".join(p for p in params if p != "self")
            raise ConfigError(f"{where}.{key}: unknown key for {node['_target_']} (expected one of: {allowed})")
        if key not in params:
            continue
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{where}.{key}: a value is required ('???' was not overridden)")
        raw = node[key]
        annotation = hints.get(key, params[key].annotation)
        if isinstance(raw, DictConfig) and "_target_" in raw:
            continue
        if not _type_matches(raw, annotation):
            name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            raise ConfigError(f"{where}.{key}: expected {name}, got {_describe(raw)}")
    if not is_partial:
        for name, param in params.items():
            if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            if param.default is inspect.Parameter.empty and name not in node:
                raise ConfigError(f"{where}.{name}: missing required argument of {node['_target_']}")


def check_instantiable(cfg: DictConfig, where: str = "") -> None:
    """Recursively check every ``_target_`` node under ``cfg`` against its constructor signature."""
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            _check_node(cfg, where or "<root>")
        for key in cfg.keys():
            if str(key) in HYDRA_KEYS or OmegaConf.is_missing(cfg, key):
                continue
            child = cfg._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                check_instantiable(child, f"{where}.{key}" if where else str(key))
    elif isinstance(cfg, ListConfig):
        for index, child in enumerate(cfg):
            if isinstance(child, DictConfig | ListConfig):
                check_instantiable(child, f"{where}[{index}]")


def resolve_or_fail(cfg: DictConfig) -> None:
    """Resolve every interpolation now so a broken ``${...}`` names its key at start-up."""
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # omegaconf raises several types; all are config errors here
        key = getattr(exc, "full_key", "") or ""
        message = str(exc).splitlines()[0]
        raise ConfigError(f"{key}: {message}" if key else message) from None
