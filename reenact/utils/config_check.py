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
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from reenact.errors import ReenactError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ReenactError, ValueError):
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


def _type_name(annotation: Any) -> str:
    """A type hint in config words: ``Optional[int]`` -> ``int or null``, ``list[int]`` -> ``list of int``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names + (["null"] if type(None) in args else []))
    if annotation is type(None):
        return "null"
    if origin is not None:
        base = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if args and origin is tuple and args[-1] is not Ellipsis:
            return f"[{', '.join(_type_name(a) for a in args)}]"  # a fixed-length list in the YAML
        if args and origin in (list, tuple, Sequence, typing.Sequence):
            return f"{base} of {_type_name(args[0])}"
        return base
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _signature(node: DictConfig, where: str) -> tuple[Mapping[str, inspect.Parameter], dict[str, Any]] | None:
    """The parameters and resolved type hints of the node's ``_target_`` (None when it has no signature)."""
    target = import_target(str(node["_target_"]), where)
    func: Callable[..., Any] = target
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolved forward references: fall back to raw annotations
        hints = {}
    return signature.parameters, hints


def _check_key(node: DictConfig, key: str, where: str, params: Mapping[str, inspect.Parameter],
               hints: dict[str, Any]) -> None:
    """Check one key of a ``_target_`` node: a parameter of the target, given a value of its type."""
    if key in HYDRA_KEYS:
        return
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if key not in params and not accepts_any:
        allowed = ", ".join(p for p in params if p != "self")
        raise ConfigError(f"{where}.{key}: unknown key for {node['_target_']} (expected one of: {allowed})")
    if key not in params:
        return
    if OmegaConf.is_missing(node, key):
        raise ConfigError(f"{where}.{key}: a value is required ('???' was not overridden)")
    raw = node[key]
    annotation = hints.get(key, params[key].annotation)
    if isinstance(raw, DictConfig) and "_target_" in raw:
        return
    if not _type_matches(raw, annotation):
        expected = f"expected {_type_name(annotation)}, got {_describe(raw)}"
        source = _interpolation_source(node, key)
        if source is not None:  # name the key the value was set at, which is the one the user typed
            raise ConfigError(f"{source}: {expected} (used by {where}.{key})")
        raise ConfigError(f"{where}.{key}: {expected}")


def _interpolation_source(node: DictConfig, key: str) -> str | None:
    """The key that ``node.key`` takes its value from through plain ``${a.b.c}`` references, if it does."""
    root = node._get_root()
    child = node._get_node(key)
    source = None
    for _ in range(16):  # a chain of references, never a cycle (OmegaConf would have failed on that)
        if child is None or not child._is_interpolation():
            break
        match = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", str(child._value()))
        if match is None:
            break
        source = match.group(1)
        parent_key, _, name = source.rpartition(".")
        parent = OmegaConf.select(root, parent_key) if parent_key else root
        child = parent._get_node(name) if isinstance(parent, DictConfig) else None
    return source


def _check_node(node: DictConfig, where: str) -> None:
    found = _signature(node, where)
    if found is None:
        return
    params, hints = found
    for key in node.keys():
        _check_key(node, str(key), where, params, hints)
    if not node.get("_partial_", False):
        for name, param in params.items():
            if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            if param.default is inspect.Parameter.empty and name not in node:
                raise ConfigError(f"{where}.{name}: missing required argument of {node['_target_']}")


def check_key(cfg: DictConfig, key: str) -> None:
    """Check the dotted ``key`` alone against the signature of the ``_target_`` that its parent node configures.

    Used on the keys a user overrides, before anything else is checked: a value that other keys interpolate
    (``trainer.max_epochs`` feeds ``model.scheduler.epochs``) is then reported under the name the user typed.
    Keys whose parent has no ``_target_``, or that do not exist, are left to :func:`check_instantiable`.
    """
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or "_target_" not in parent or name not in parent:
        return
    found = _signature(parent, parent_key or "<root>")
    if found is not None:
        _check_key(parent, name, parent_key or "<root>", *found)


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
