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
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ..errors import BregnetError, ConfigError

__all__ = ["DEFAULTS", "apply_overrides", "list_recipes", "load_config", "merge", "parse_scalar", "validate"]

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


def load_config(recipe: str | os.PathLike | None = None,
                overrides: Iterable[str | tuple[str, Any]] = ()) -> dict[str, Any]:
    """Defaults <- recipe <- overrides, validated."""
    cfg = load_recipe(recipe) if recipe else copy.deepcopy(DEFAULTS)
    return validate(apply_overrides(cfg, overrides))
