"""Training configuration: YAML recipes shipped in ``bregnet/configs`` plus ``key=value`` overrides.

A recipe is a nested mapping with the sections below; anything it leaves out takes the default.
Unknown keys are rejected with the list of valid ones, so a typo never silently does nothing.

Overrides come in two kinds (:func:`apply_overrides`): ``section.key=value`` strings, whose value
is read as a YAML scalar or flow collection by :func:`parse_scalar` (``1e-3``, ``true``,
``[1, 2]``, ``{train: 512}``, ``null``), and ``(dotted_key, value)`` pairs whose value is
taken as it is (what the CLI's typed flags give: ``--root 2013`` stays the string ``"2013"``).
The reader options of a recipe (``data.options``, ``data.sizes``, ``data.split_options``) belong
to its data set: when an override names another data set, they are dropped, and only options
given with the overrides apply.
"""

from __future__ import annotations

import copy
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import BregnetError, ConfigError

__all__ = ["DEFAULTS", "apply_overrides", "list_recipes", "load_config", "merge", "parse_scalar"]

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "model": {
        "name": "bregnext50",
        "shortcut": None,       # identity | arctan | tanh | softsign | adaptive (None: the family's)
        "args": {},             # extra constructor arguments, e.g. stages: [[1, 32], [1, 64], [1, 128]]
    },
    "task": "categorical",      # categorical | dimensional | multitask
    "data": {
        "name": "synthetic",    # a reader name (bregnet.data.registry)
        "root": None,
        "cache": None,          # prepared cache directory; built on first use if missing
        "train_split": "train",
        "val_split": "val",
        "test_split": "test",
        "options": {},          # reader options of data.name (dropped when an override changes it)
        "sizes": {},            # generated data sets (synthetic): items per split, {train: 6000}
        "split_options": {},    # per-split reader options over `options`, e.g. {test: {imbalance: none}}
    },
    "train": {
        "epochs": 100,
        "max_steps": None,      # stop after this many optimiser steps (overrides epochs)
        "max_time_s": None,     # stop after this much training time (demo)
        "batch_size": 64,       # global batch; divided among distributed ranks
        "optimizer": "adam",    # adam (L2 added to the gradient) | adamw (decoupled)
        "lr": 1.0e-4,
        "lr_decay": 0.8,
        "lr_decay_steps": 8000,  # staircase: lr * decay ** (step // decay_steps)
        "weight_decay": 1.0e-4,  # applied to conv / linear weights (the official script never did)
        "loss": "ce",           # ce | focal
        "weighting": "inverse",  # none | inverse | sqrt | effective
        "beta": 0.999,
        "focal_gamma": 2.0,
        "focal_alpha": 0.25,
        "label_smoothing": 0.0,
        "va_loss": "mse",       # mse | ccc | mse+ccc
        "va_weight": 1.0,
        "augment": True,
        "balanced_sampler": False,
        "select_metric": None,  # None: accuracy (categorical) or va_ccc_mean (dimensional)
        "early_stopping": None,  # patience in epochs
        "amp": "auto",          # auto | bf16 | fp16 | off  (CUDA only)
        "channels_last": "auto",
        "compile": False,
        "sync_bn": False,
        "seed": 0,
        "eval_batch_size": 256,
        "tta_flip": False,
        "log_tensorboard": True,
    },
}

SECTIONS = ("model", "data", "train")
# Mappings whose keys are free (reader options, model arguments...): merged shallowly, any key allowed.
FREE_MAPS = ("model.args", "data.options", "data.sizes", "data.split_options")
# The parts of ``data`` that belong to one data set (dropped when an override names another one).
DATASET_SPECIFIC = ("options", "sizes", "split_options")


def merge(base: dict[str, Any], update: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; keys must exist in ``base`` except free maps."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in out and path.rstrip(".") not in FREE_MAPS:
            valid = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {where!r}; valid keys here: {valid}")
        if isinstance(out.get(key), dict) and isinstance(value, dict) and where not in FREE_MAPS:
            out[key] = merge(out[key], value, f"{where}.")
        elif isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def list_recipes() -> list[str]:
    """Names of the recipes shipped inside the package."""
    folder = resources.files("bregnet") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: a recipe must be a mapping of sections")
    return doc


def load_recipe(name_or_path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A shipped recipe by name, or a YAML file by path (it may ``base:`` on a shipped recipe)."""
    from ..fileio import read_text

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"recipe file not found: {p}")
        doc = _read_yaml(read_text(p, "recipe file"), str(p))
    else:
        res = resources.files("bregnet") / "configs" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown recipe {str(name_or_path)!r}; shipped recipes: {', '.join(list_recipes())}"
            )
        doc = _read_yaml(res.read_text(encoding="utf-8"), f"recipe {name_or_path}")
    base = doc.pop("base", None)
    if base:
        key = str(base)
        if key in _seen:
            raise ConfigError(f"recipe {str(name_or_path)!r}: 'base' chain loops back to {key!r}")
        return merge(load_recipe(base, (*_seen, key)), doc)
    return merge(DEFAULTS, doc)


_NULLS = ("", "~", "null", "Null", "NULL")
_COMMENT = re.compile(r"(^|\s)#")


def parse_scalar(text: str) -> Any:
    """A value given as text on the command line (``key=value``), read as YAML where that is what
    the user meant: numbers (``3e-4`` too, which YAML 1.1 leaves a string), booleans, ``null``,
    flow lists and mappings (``[1, 2]``, ``{train: 512}``), quoted strings. Anything else stays the
    text exactly as given: a ``#`` never starts a comment (``a #1`` is kept whole) and text that
    YAML cannot parse is kept as it is."""
    raw = str(text)
    stripped = raw.strip()
    if stripped in _NULLS:
        return None
    quoted = stripped[:1] in ("'", '"')
    if not quoted and _COMMENT.search(raw):
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        if quoted:  # a quoted string: the user asked for exactly this
            return value
        try:  # YAML 1.1 reads "3e-4" as a string; users mean a number
            return float(value)
        except ValueError:
            return raw
    if isinstance(value, (dict, list)) and stripped[:1] not in ("{", "["):
        return raw  # block YAML ("a: b", "- x") is not a command-line value: keep the text
    return value


def _parse_override(item: str | tuple[str, Any]) -> tuple[list[str], Any]:
    """``"a.b=value"`` (value parsed by :func:`parse_scalar`) or ``("a.b", value)`` (value kept)."""
    if isinstance(item, tuple):
        key, value = item
    else:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        value = parse_scalar(raw)
    keys = [k.strip() for k in str(key).split(".")]
    if not all(keys):
        raise ConfigError(f"override key {key!r} has an empty part")
    return keys, value


def _apply(cfg: dict[str, Any], items: list[tuple[list[str], Any]]) -> dict[str, Any]:
    for keys, value in items:
        update: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            update = {k: update}
        cfg = merge(cfg, update)
    return cfg


def _dataset_key(name: Any) -> str:
    """The registered name of a data set (``FER`` and ``fer2013`` are one), else the text."""
    from ..data.registry import get_reader_class

    try:
        return get_reader_class(str(name)).name
    except BregnetError:  # not a registered name: the reader will say so when it is opened
        return str(name).strip().lower()


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """Apply overrides: ``section.key=value`` strings (values by :func:`parse_scalar`) or typed
    ``(dotted_key, value)`` pairs. When they change ``data.name``, the recipe's reader options
    (``data.options``, ``data.sizes``, ``data.split_options``) are dropped first: they were meant
    for the recipe's data set, and another reader would reject them."""
    items = [_parse_override(item) for item in overrides]
    out = _apply(cfg, items)
    data_before, data_after = cfg.get("data") or {}, out.get("data") or {}
    if _dataset_key(data_after.get("name")) != _dataset_key(data_before.get("name")):
        base = copy.deepcopy(cfg)
        for key in DATASET_SPECIFIC:
            base["data"][key] = {}
        out = _apply(base, items)
    return out


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check values whose mistakes would only show deep inside a run."""
    t = cfg["train"]
    if isinstance(t["amp"], bool):  # YAML reads off/on as booleans
        t["amp"] = "auto" if t["amp"] else "off"
    if cfg["task"] not in ("categorical", "dimensional", "multitask"):
        raise BregnetError(f"task must be categorical, dimensional or multitask, not {cfg['task']!r}")
    for key in ("batch_size", "epochs", "lr_decay_steps", "eval_batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise BregnetError(f"train.{key} must be a positive integer, got {t[key]!r}")
    for key in ("lr", "lr_decay", "weight_decay", "va_weight", "label_smoothing"):
        if not isinstance(t[key], (int, float)) or t[key] < 0:
            raise BregnetError(f"train.{key} must be a non-negative number, got {t[key]!r}")
    if t["max_steps"] is not None and (not isinstance(t["max_steps"], int) or t["max_steps"] < 1):
        raise BregnetError(f"train.max_steps must be a positive integer, got {t['max_steps']!r}")
    choices = {"optimizer": ("adam", "adamw"), "loss": ("ce", "focal"),
               "weighting": ("none", "inverse", "sqrt", "effective"),
               "va_loss": ("mse", "ccc", "mse+ccc"), "amp": ("auto", "bf16", "fp16", "off")}
    for key, allowed in choices.items():
        if t[key] not in allowed:
            raise BregnetError(f"train.{key} must be one of {', '.join(allowed)}, got {t[key]!r}")
    return cfg


def load_config(recipe: str | os.PathLike | None = None,
                overrides: Iterable[str | tuple[str, Any]] = ()) -> dict[str, Any]:
    """Defaults <- recipe <- overrides, validated."""
    cfg = load_recipe(recipe) if recipe else copy.deepcopy(DEFAULTS)
    return validate(apply_overrides(cfg, overrides))
