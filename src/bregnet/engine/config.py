"""Training configuration: YAML recipes shipped in ``bregnet/configs`` plus ``key=value`` overrides.

A recipe is a nested mapping with the sections below; anything it leaves out takes the default.
Unknown keys are rejected with the list of valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import BregnetError

__all__ = ["DEFAULTS", "apply_overrides", "list_recipes", "load_config", "merge"]

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "model": {
        "name": "bregnext50",
        "shortcut": None,       # identity | arctan | tanh | softsign | adaptive (None: the family's)
        "args": {},             # extra constructor arguments, e.g. stages: [[1, 32], [1, 64], [1, 128]]
    },
    "task": "categorical",      # categorical | dimensional | multitask
    "data": {
        "name": "synthetic",    # a reader name (bregnet.data.registry) or "synthetic"
        "root": None,
        "cache": None,          # prepared cache directory; built on first use if missing
        "train_split": "train",
        "val_split": "val",
        "test_split": "test",
        "options": {},          # reader options (synthetic: n, seed, imbalance, difficulty)
        "sizes": {},            # synthetic only: images per split, e.g. {train: 6000, val: 1000}
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
        "amp": "auto",          # auto | bf16 | fp16 | off  (auto: bf16 where the GPU or CPU has it)
        "channels_last": "auto",  # auto | true | false  (auto: see engine/precision.py)
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


def merge(base: dict[str, Any], update: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; keys must exist in ``base`` except free maps."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in out and path.rstrip(".") not in FREE_MAPS:
            valid = ", ".join(sorted(out))
            raise BregnetError(f"unknown config key {where!r}; valid keys here: {valid}")
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
        raise BregnetError(f"{origin}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(doc, dict):
        raise BregnetError(f"{origin}: a recipe must be a mapping of sections")
    return doc


def load_recipe(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A shipped recipe by name, or a YAML file by path (it may ``base:`` on a shipped recipe)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise BregnetError(f"recipe file not found: {p}")
        doc = _read_yaml(p.read_text(), str(p))
    else:
        res = resources.files("bregnet") / "configs" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise BregnetError(
                f"unknown recipe {str(name_or_path)!r}; shipped recipes: {', '.join(list_recipes())}"
            )
        doc = _read_yaml(res.read_text(), f"recipe {name_or_path}")
    base = doc.pop("base", None)
    if base:
        return merge(load_recipe(base), doc)
    return merge(DEFAULTS, doc)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise BregnetError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; users mean a number
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML: 1e-3, true, [1, 2], null)."""
    for item in overrides:
        keys, value = _parse_override(item)
        update: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            update = {k: update}
        cfg = merge(cfg, update)
    return cfg


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
    if t["channels_last"] != "auto" and not isinstance(t["channels_last"], bool):
        raise BregnetError(f"train.channels_last must be auto, true or false, got {t['channels_last']!r}")
    return cfg


def load_config(recipe: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults <- recipe <- overrides, validated."""
    cfg = load_recipe(recipe) if recipe else copy.deepcopy(DEFAULTS)
    return validate(apply_overrides(cfg, overrides))
