"""Training configuration: YAML recipes shipped in ``bregnet/configs`` plus ``key=value`` overrides.

A recipe is a nested mapping with the sections below; anything it leaves out takes the default.
Unknown keys are rejected with the list of valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ..errors import BregnetError, ConfigError

__all__ = ["DEFAULTS", "apply_overrides", "list_recipes", "load_config", "merge", "validate"]

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
        "loss": "ce",           # ce | focal | focal-official (the official code's two-term form)
        "weighting": "inverse",  # none | inverse | sqrt | effective
        "beta": 0.999,
        "focal_gamma": 2.0,
        "focal_alpha": 0.25,
        "label_smoothing": 0.0,
        "va_loss": "mse",       # mse | ccc | mse+ccc
        "va_weight": 1.0,
        "augment": True,
        "balanced_sampler": False,
        "soft_labels": "auto",  # auto | true | false: train on label distributions (FERPlus votes)
        "select_metric": None,  # None: accuracy (categorical) or va_ccc_mean (dimensional); any
                                # key of bregnet.metrics.selection_metrics(task), e.g. va_rmse_mean
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


# ------------------------------------------------------------------------------- validation
# A rule checks one value and returns None when it is valid, else what it must be ("must be ...").
Rule = Callable[[Any], "str | None"]


def _show(value: Any) -> str:
    """A short repr for an error line (a huge list must not flood the terminal)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_rule(minimum: int, optional: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if (v is None and optional) or (_is_int(v) and v >= minimum):
            return None
        return f"must be {'null or ' if optional else ''}an integer >= {minimum}"
    return rule


def _number_rule(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
                 hi_open: bool = False, optional: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if v is None and optional:
            return None
        if _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi):
            return None
        if hi == math.inf:
            span = f"> {lo:g}" if lo_open else f">= {lo:g}"
        else:
            span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        return f"must be {'null or ' if optional else ''}a number {span}"
    rule.number = True  # type: ignore[attr-defined]  # YAML 1.1 text such as "3e-4" is accepted
    return rule


def _choice_rule(*allowed: Any) -> Rule:
    def rule(v: Any) -> str | None:
        if any(v == a and type(v) is type(a) for a in allowed):
            return None
        return "must be one of " + ", ".join("true" if a is True else "false" if a is False else
                                             "null" if a is None else str(a) for a in allowed)
    return rule


def _bool_rule(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _alpha_rule(v: Any) -> str | None:
    if v is None or (_is_number(v) and v >= 0):
        return None
    if isinstance(v, (list, tuple)) and v and all(_is_number(a) and a >= 0 for a in v):
        return None
    return "must be null, a number >= 0 or a list of per-class numbers >= 0"


def _train_rules() -> dict[str, Rule]:
    from ..losses import CLS_LOSSES, VA_KINDS, WEIGHT_SCHEMES

    return {
        "epochs": _int_rule(1),
        "max_steps": _int_rule(1, optional=True),
        "max_time_s": _number_rule(0, lo_open=True, optional=True),
        "batch_size": _int_rule(1),
        "optimizer": _choice_rule("adam", "adamw"),
        "lr": _number_rule(0),
        "lr_decay": _number_rule(0, 1, lo_open=True),
        "lr_decay_steps": _int_rule(1),
        "weight_decay": _number_rule(0),
        "loss": _choice_rule(*CLS_LOSSES),
        "weighting": _choice_rule(*WEIGHT_SCHEMES),
        "beta": _number_rule(0, 1, hi_open=True),
        "focal_gamma": _number_rule(0),
        "focal_alpha": _alpha_rule,
        "label_smoothing": _number_rule(0, 1, hi_open=True),
        "va_loss": _choice_rule(*VA_KINDS),
        "va_weight": _number_rule(0),
        "augment": _bool_rule,
        "balanced_sampler": _bool_rule,
        "soft_labels": _choice_rule("auto", True, False),
        "select_metric": lambda v: None,  # checked against the task's metrics below
        "early_stopping": _int_rule(1, optional=True),
        "amp": _choice_rule("auto", "bf16", "fp16", "off"),
        "channels_last": _choice_rule("auto", True, False),
        "compile": _bool_rule,
        "sync_bn": _bool_rule,
        "seed": _int_rule(0),
        "eval_batch_size": _int_rule(1),
        "tta_flip": _bool_rule,
        "log_tensorboard": _bool_rule,
    }


def _require_mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping (key: value, ...), got {_show(value)}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{key} has a key {_show(k)} that is not a name")
    return value


def _check_keys(section: dict[str, Any], key: str, expected: Iterable[str]) -> None:
    expected = list(expected)
    prefix = f"{key}." if key else ""
    unknown = [k for k in section if k not in expected]
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; valid keys here: {', '.join(sorted(expected))}")
    missing = [k for k in expected if k not in section]
    if missing:
        raise ConfigError(f"config key {prefix + missing[0]!r} is missing")


def _check(value: Any, key: str, rule: Rule) -> None:
    problem = rule(value)
    if problem:
        raise ConfigError(f"{key} {problem}, got {_show(value)}")


def _validate_model(m: dict[str, Any]) -> None:
    import inspect

    from ..models import SHORTCUTS, BregNet, list_models
    from ..models.registry import CUSTOM_SUFFIX

    _check_keys(m, "model", DEFAULTS["model"])
    names = list_models()
    if not isinstance(m["name"], str) or m["name"] not in names:
        raise ConfigError(f"model.name {_show(m['name'])} is not a registered model; choose one of {', '.join(names)}")
    _check(m["shortcut"], "model.shortcut", _choice_rule(None, *SHORTCUTS))
    args = _require_mapping(m["args"] if m["args"] is not None else {}, "model.args")
    # the network's constructor arguments, less those the trainer sets from the task and data
    allowed = [p for p in inspect.signature(BregNet.__init__).parameters
               if p not in ("self", "num_classes", "va", "shortcut")]
    for k in args:
        if k not in allowed:
            extra = " (set model.shortcut instead)" if k == "shortcut" else ""
            raise ConfigError(f"unknown model argument model.args.{k}{extra}; valid: {', '.join(allowed)}")
    rules: dict[str, Rule] = {"stem_width": _int_rule(1), "stem_stride": _choice_rule(1, 2),
                              "in_chans": _int_rule(1), "tf_same_padding": _bool_rule}
    for k, rule in rules.items():
        if k in args:
            _check(args[k], f"model.args.{k}", rule)
    if "stages" in args:
        stages = args["stages"]
        ok = isinstance(stages, (list, tuple)) and len(stages) > 0 and all(
            isinstance(st, (list, tuple)) and len(st) == 2 and all(_is_int(x) and x >= 1 for x in st)
            for st in stages)
        if not ok:
            raise ConfigError(f"model.args.stages must be a list of [units, width] pairs of positive "
                              f"integers, e.g. [[1, 16], [1, 32]], got {_show(stages)}")
    elif m["name"].endswith(CUSTOM_SUFFIX):
        raise ConfigError(f"model.name {m['name']} needs model.args.stages, e.g. [[1, 16], [1, 32], [1, 64]]")


def _validate_data(d: dict[str, Any]) -> None:
    from ..data.registry import get_reader_class, list_datasets
    from ..errors import DataError

    _check_keys(d, "data", DEFAULTS["data"])
    if not isinstance(d["name"], str):
        raise ConfigError(f"data.name must be a data set name, got {_show(d['name'])}")
    try:
        reader = get_reader_class(d["name"])
    except DataError:
        raise ConfigError(f"data.name {d['name']!r} is not a registered data set; choose one of "
                          f"{', '.join(list_datasets())}") from None
    for key in ("root", "cache"):
        if d[key] is not None and not isinstance(d[key], (str, os.PathLike)):
            raise ConfigError(f"data.{key} must be a path (text), got {_show(d[key])}")
    for key in ("train_split", "val_split", "test_split"):
        value = d[key]
        if value is None and key != "train_split":
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"data.{key} must be a split name (text){'' if key == 'train_split' else ' or null'}, "
                              f"got {_show(value)}")
    configured = [d[k] for k in ("train_split", "val_split", "test_split") if d[k]]
    splits = list(dict.fromkeys([*reader.splits, *configured]))
    _require_mapping(d["options"] if d["options"] is not None else {}, "data.options")
    split_options = _require_mapping(d["split_options"] if d["split_options"] is not None else {},
                                     "data.split_options")
    for split, opts in split_options.items():
        if split not in splits:
            raise ConfigError(f"data.split_options.{split}: {reader.name} has no split {split!r}; "
                              f"splits: {', '.join(splits)}")
        _require_mapping(opts if opts is not None else {}, f"data.split_options.{split}")
    sizes = _require_mapping(d["sizes"] if d["sizes"] is not None else {}, "data.sizes")
    if sizes and reader.name != "synthetic":
        raise ConfigError(f"data.sizes sets the number of generated images and applies only to "
                          f"data.name=synthetic, not {reader.name} (its size is its files')")
    for split, n in sizes.items():
        if split not in reader.splits:
            raise ConfigError(f"data.sizes.{split}: synthetic has no split {split!r}; splits: "
                              f"{', '.join(reader.splits)}")
        _check(n, f"data.sizes.{split}", _int_rule(1))


def select_metric_direction(name: Any, task: str) -> bool:
    """True when a larger ``name`` is better (from the metrics table); a ConfigError listing the
    task's metrics when ``name`` is not one of them (``train.select_metric``)."""
    from ..metrics import selection_metrics

    table = selection_metrics(task)
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"train.select_metric {_show(name)} is not a metric of a {task} model; "
                          f"choose one of {', '.join(table)}")
    return table[name]


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every key and value of a recipe (types, ranges, choices, registered names), so a
    mistake fails at once with one line naming the key instead of deep inside a run, or never.

    Raises :class:`~bregnet.errors.ConfigError`. Normalises YAML's booleans where a key also
    takes words (``amp: off`` is read as false) and number strings YAML 1.1 leaves as text
    (``lr: 3e-4``). Returns ``cfg``.
    """
    _require_mapping(cfg, "the recipe")
    _check_keys(cfg, "", DEFAULTS)
    if not isinstance(cfg["name"], str) or not cfg["name"].strip():
        raise ConfigError(f"name must be a run name (text), got {_show(cfg['name'])}")
    _check(cfg["task"], "task", _choice_rule("categorical", "dimensional", "multitask"))
    for section in SECTIONS:
        _require_mapping(cfg[section], section)
    _validate_model(cfg["model"])
    _validate_data(cfg["data"])

    t = cfg["train"]
    rules = _train_rules()
    _check_keys(t, "train", rules)
    if isinstance(t["amp"], bool):  # YAML reads off/on as booleans
        t["amp"] = "auto" if t["amp"] else "off"
    for key, rule in rules.items():
        value = t[key]
        if isinstance(value, str) and getattr(rule, "number", False):  # YAML 1.1 leaves 3e-4 as text
            try:
                t[key] = value = float(value)
            except ValueError:
                pass
        _check(value, f"train.{key}", rule)
    if t["select_metric"] is not None:
        select_metric_direction(t["select_metric"], cfg["task"])
    if t["early_stopping"] is not None and not cfg["data"]["val_split"]:
        raise ConfigError("train.early_stopping needs a validation split (data.val_split)")
    if t["label_smoothing"] and t["loss"] != "ce":
        raise ConfigError(f"train.label_smoothing works only with train.loss=ce, not {t['loss']}")
    if t["loss"] == "focal-official" and not (t["focal_alpha"] is None or
                                              (_is_number(t["focal_alpha"]) and t["focal_alpha"] <= 1)):
        raise ConfigError("train.focal_alpha must be a number in [0, 1] (or null) with "
                          f"train.loss=focal-official, got {_show(t['focal_alpha'])}")
    return cfg


def load_config(recipe: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults <- recipe <- overrides, validated."""
    cfg = load_recipe(recipe) if recipe else copy.deepcopy(DEFAULTS)
    return validate(apply_overrides(cfg, overrides))
