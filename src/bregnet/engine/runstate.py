"""A run's checkpoint state as one consistent unit: numbered generations, each sealed by a
manifest written last, and the checks that a resumed run is the run it claims to continue.

Every save of a run writes a new folder ``checkpoints/<generation>-step-<N>/``:

    model.safetensors   the weights and metadata at step N (what ``last.safetensors`` shows)
    best.safetensors    the best checkpoint so far (a hard link to the previous one when unchanged)
    state.pt            optimiser, step, history, run id: what ``--resume`` needs
    manifest.json       written last: generation, step, epoch, run id, each file's size and SHA-256

A generation is complete when its manifest reads, every file it lists has that size and hash, and
the step and run id inside the files agree with it. Only then are ``last.safetensors`` and
``best.safetensors`` (and their ``.json``) published in the run folder (hard links renamed into
place: a whole checkpoint file at every instant), and only then are older generations pruned (the
newest ``keep`` of this run stay). So whatever instant the process dies, on whichever write the
disk fills up, the newest complete generation is a matching set and :func:`find_resumable`
continues from it, naming any newer one it skipped and why. A run folder of an older bregnet
(``last.safetensors`` + ``last.state.pt``) resumes when the two agree on the step.

Debris of an interrupted save (temporary files, a generation without manifest) is removed at the
next start (:func:`remove_debris`). Only files of the names written here are ever deleted: a
foreign file in a generation folder keeps that folder.

:func:`check_state` validates a training state (types of every key, the optimiser's shapes),
:func:`run_differences` compares the saved recipe, model, task and labels with those asked for.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_link_or_copy, atomic_write, atomic_write_text, json_text, remove_stale_temps
from .checkpoint import CheckpointMeta, read_metadata, save_checkpoint

__all__ = [
    "CHECKPOINTS",
    "GENERATION_FILES",
    "Generation",
    "RUN_FILES",
    "Resumable",
    "check_state",
    "find_resumable",
    "generation_folders",
    "has_run",
    "next_generation",
    "prune",
    "publish",
    "remove_debris",
    "run_differences",
    "write_generation",
]

RUN_STATE_FORMAT = "bregnet-run-state/1"
CHECKPOINTS = "checkpoints"
MODEL, BEST, STATE, MANIFEST = "model.safetensors", "best.safetensors", "state.pt", "manifest.json"
GENERATION_FILES = (MODEL, BEST, STATE, MANIFEST)
LEGACY_STATE = "last.state.pt"
#: files of the run folder itself that the trainer writes (their stale temporaries are removed)
RUN_FILES = ("last.safetensors", "last.json", "best.safetensors", "best.json", "history.csv",
             "config.yaml", LEGACY_STATE)
_NAME = re.compile(r"^(\d{6,})-step-(\d+)$")
_MAX_MANIFEST_BYTES = 1 << 20


def _sha256(path: Path) -> str:
    from ..export.convert_tf import _sha256 as sha256_file  # the package's one file hasher

    return sha256_file(path)


def _rel(run_dir: Path, path: Path) -> str:
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Generation:
    """One complete, verified save of a run."""

    path: Path
    number: int
    step: int
    epoch: int
    run_id: str
    files: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def best_path(self) -> Path | None:
        return self.path / BEST if BEST in self.files else None


@dataclass
class Resumable:
    """What ``--resume`` continues from: the newest complete state, and what was skipped."""

    where: str                      # shown in messages: checkpoints/000003-step-12 or last.state.pt
    model_path: Path
    best_path: Path | None
    state_path: Path
    state: dict[str, Any]
    generation: Generation | None   # None for an older bregnet's last.safetensors + last.state.pt
    skipped: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- folders
def generation_folders(run_dir: str | os.PathLike) -> list[tuple[int, int, Path]]:
    """``(generation, step, folder)`` of every generation folder, oldest first (complete or not)."""
    d = Path(run_dir) / CHECKPOINTS
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(found)


def next_generation(run_dir: str | os.PathLike) -> int:
    """The number of the next generation: above every folder present, complete or not."""
    folders = generation_folders(run_dir)
    return folders[-1][0] + 1 if folders else 1


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a generation folder, schema-checked (CheckpointError saying why not)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError("incomplete (no manifest: its save was interrupted)")
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise CheckpointError("manifest too large")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"unreadable manifest ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("format") != RUN_STATE_FORMAT:
        raise CheckpointError("not a bregnet run-state manifest")
    for key in ("generation", "step", "epoch"):
        v = doc.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"manifest: {key} must be a non-negative integer")
    if not isinstance(doc.get("run_id"), str) or not doc["run_id"]:
        raise CheckpointError("manifest: run_id missing")
    files = doc.get("files")
    if not isinstance(files, dict) or MODEL not in files or STATE not in files:
        raise CheckpointError(f"manifest: files must list {MODEL} and {STATE}")
    for name, info in files.items():
        if name not in (MODEL, BEST, STATE) or not isinstance(info, dict) \
                or not isinstance(info.get("size"), int) or not isinstance(info.get("sha256"), str):
            raise CheckpointError(f"manifest: bad entry for {name!r}")
    return doc


def verify_generation(folder: Path) -> Generation:
    """The generation in ``folder`` if it is complete: manifest, sizes, SHA-256, and the step and
    run id recorded inside the weights agree. CheckpointError with the reason otherwise."""
    m = _NAME.match(folder.name)
    doc = _read_manifest(folder)
    if m is None or (int(m.group(1)), int(m.group(2))) != (doc["generation"], doc["step"]):
        raise CheckpointError("its manifest belongs to another generation")
    for name, info in doc["files"].items():
        p = folder / name
        try:
            size = p.stat().st_size
        except OSError:
            raise CheckpointError(f"{name} is missing") from None
        if size != info["size"]:
            raise CheckpointError(f"{name} has {size:,} bytes, its manifest says {info['size']:,}")
        if _sha256(p) != info["sha256"]:
            raise CheckpointError(f"{name} differs from its manifest (SHA-256)")
    extra = read_metadata(folder / MODEL).extra
    if extra.get("step") != doc["step"] or extra.get("run_id") != doc["run_id"]:
        raise CheckpointError(f"{MODEL} records step {extra.get('step')} of run {extra.get('run_id')}, "
                              f"its manifest step {doc['step']} of run {doc['run_id']}")
    return Generation(folder, doc["generation"], doc["step"], doc["epoch"], doc["run_id"],
                      tuple(sorted(doc["files"])))


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: never unpickle arbitrary objects
        raise CheckpointError(f"cannot read training state {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: training state must be a mapping, got {type(state).__name__}")
    return state


def has_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that a new one would replace: a generation with a
    manifest, or an older bregnet's ``last.state.pt``."""
    run_dir = Path(run_dir)
    return (run_dir / LEGACY_STATE).is_file() or any(
        (f / MANIFEST).is_file() for _, _, f in generation_folders(run_dir))


def find_resumable(run_dir: str | os.PathLike) -> Resumable:
    """The newest complete, matching state of the run in ``run_dir``; generations that are not
    (interrupted saves, damaged files) are skipped and listed. CheckpointError when none is."""
    run_dir = Path(run_dir)
    skipped: list[str] = []
    for _, _, folder in reversed(generation_folders(run_dir)):
        where = _rel(run_dir, folder)
        try:
            gen = verify_generation(folder)
            state = _load_state(folder / STATE)
            if state.get("step") != gen.step or state.get("run_id") != gen.run_id:
                raise CheckpointError(f"{STATE} records step {state.get('step')!r} of run "
                                      f"{state.get('run_id')!r}, its manifest step {gen.step}")
        except CheckpointError as exc:
            skipped.append(f"{where}: {exc}")
            continue
        return Resumable(where, gen.model_path, gen.best_path, folder / STATE, state, gen, skipped)
    legacy = run_dir / LEGACY_STATE
    if legacy.is_file():
        last = run_dir / "last.safetensors"
        if not last.is_file():
            raise CheckpointError(f"cannot resume {run_dir}: {LEGACY_STATE} without last.safetensors")
        state = _load_state(legacy)
        saved_step = read_metadata(last).extra.get("step")
        if state.get("step") != saved_step:
            raise CheckpointError(
                f"cannot resume {run_dir}: last.safetensors is at step {saved_step} but {LEGACY_STATE} "
                f"at step {state.get('step')!r} (a save was interrupted between the two files)")
        best = run_dir / "best.safetensors"
        return Resumable(LEGACY_STATE, last, best if best.is_file() else None, legacy, state, None, skipped)
    if skipped:
        raise CheckpointError(f"nothing to resume in {run_dir}: no complete checkpoint ({'; '.join(skipped)})")
    raise CheckpointError(f"nothing to resume: {run_dir} holds no checkpoint")


# ----------------------------------------------------------------------------------- writing
def write_generation(run_dir: str | os.PathLike, number: int, *, step: int, epoch: int, run_id: str,
                     model: torch.nn.Module, meta: CheckpointMeta, state: dict[str, Any],
                     best_is_last: bool = False, best_source: Path | None = None,
                     status: str = "") -> Generation:
    """Write generation ``number`` (weights, best, state, then the manifest) and return it.

    ``best_is_last``: this model is the best so far; else ``best_source`` (the previous best
    file, linked, not copied, where the file system allows) when there is one. On any failure
    (a full disk, an exception) the incomplete folder is removed and the error propagates: the
    previous generations are untouched."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS / f"{number:06d}-step-{step}"
    folder.mkdir(parents=True, exist_ok=False)
    try:
        meta.extra = {**meta.extra, "step": step, "epoch": epoch, "run_id": run_id}
        save_checkpoint(folder / MODEL, model, meta, write_json=False)
        if best_is_last:
            atomic_link_or_copy(folder / MODEL, folder / BEST)
        elif best_source is not None and best_source.is_file():
            atomic_link_or_copy(best_source, folder / BEST)
        atomic_write(folder / STATE, lambda tmp: torch.save(state, tmp))
        files = {name: {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
                 for name in (MODEL, BEST, STATE) if (folder / name).is_file()}
        doc = {"format": RUN_STATE_FORMAT, "generation": number, "step": step, "epoch": epoch,
               "run_id": run_id, "status": status,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}
        atomic_write_text(folder / MANIFEST, json_text(doc, indent=2) + "\n")  # the seal: last
    except BaseException:
        _remove_generation(folder)
        raise
    return Generation(folder, number, step, epoch, run_id, tuple(sorted(files)))


def publish(run_dir: str | os.PathLike, gen: Generation) -> None:
    """Make ``last.safetensors`` / ``best.safetensors`` (and their readable ``.json``) in the run
    folder the files of ``gen``: each a hard link (or copy) renamed into place."""
    run_dir = Path(run_dir)
    for src, name in ((gen.model_path, "last"), (gen.best_path, "best")):
        if src is None:
            continue
        atomic_link_or_copy(src, run_dir / f"{name}.safetensors")
        doc = read_metadata(src).to_dict()
        atomic_write_text(run_dir / f"{name}.json", json_text(doc, indent=2, sort_keys=True))


def _remove_generation(folder: Path) -> None:
    """Delete a generation's files (the manifest first, so a half-deleted one is incomplete),
    their temporaries, then the folder if nothing else is in it."""
    for name in GENERATION_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    remove_stale_temps(folder, GENERATION_FILES)
    with contextlib.suppress(OSError):
        folder.rmdir()


def prune(run_dir: str | os.PathLike, run_id: str, keep: int = 2) -> None:
    """Keep the newest ``keep`` generations of run ``run_id``; remove the others (older ones,
    interrupted ones, another run's). Call only after the newest one is complete and published.
    An older bregnet's ``last.state.pt`` is superseded then and removed too."""
    run_dir = Path(run_dir)
    kept = 0
    for _, _, folder in reversed(generation_folders(run_dir)):
        try:
            mine = _read_manifest(folder)["run_id"] == run_id
        except CheckpointError:
            mine = False
        if mine and kept < keep:
            kept += 1
            continue
        _remove_generation(folder)
    if kept:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / LEGACY_STATE).unlink()


def remove_debris(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted save left: temporary files of the run's files and generations,
    and generation folders without a manifest. Returns the generation folders removed. Only
    call where no other process writes this run."""
    run_dir = Path(run_dir)
    remove_stale_temps(run_dir, RUN_FILES)
    removed = []
    for _, _, folder in generation_folders(run_dir):
        if (folder / MANIFEST).is_file():
            remove_stale_temps(folder, GENERATION_FILES)
        else:
            _remove_generation(folder)
            removed.append(folder)
    return removed


# ----------------------------------------------------------------------------------- checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_STATE_SCHEMA: dict[str, tuple[str, Any]] = {
    "step": ("a non-negative integer", _is_int),
    "epoch": ("a non-negative integer", _is_int),
    "step_in_epoch": ("a non-negative integer", _is_int),
    "optimizer": ("an optimiser state", lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list)),
    "scaler": ("a gradient-scaler state", lambda v: isinstance(v, dict)),
    "history": ("a list of rows", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v)),
    "best_value": ("a number or null", lambda v: v is None or _is_number(v)),
    "best_epoch": ("an integer or null", lambda v: v is None or _is_int(v)),
    "bad_epochs": ("a non-negative integer", _is_int),
}


def check_state(state: dict[str, Any], where: str, params: list[list[torch.Tensor]]) -> dict[str, Any]:
    """``state`` if it is a training state the trainer can continue: every key present with its
    type, and an optimiser state whose groups and tensors fit ``params`` (the trainer's parameter
    groups). CheckpointError naming the first key that is not."""
    for key, (what, ok) in _STATE_SCHEMA.items():
        if key not in state:
            raise CheckpointError(f"{where}: training state has no {key!r}")
        if not ok(state[key]):
            raise CheckpointError(f"{where}: training state {key!r} must be {what}, "
                                  f"got {type(state[key]).__name__}")
    running = state.get("running", [0.0, 0, 0])
    if not (isinstance(running, list) and len(running) == 3 and all(_is_number(x) for x in running)):
        raise CheckpointError(f"{where}: training state 'running' must be 3 numbers")
    opt = state["optimizer"]
    groups = opt["param_groups"]
    if len(groups) != len(params) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                             and len(g["params"]) == len(p) for g, p in zip(groups, params)):
        raise CheckpointError(f"{where}: the optimiser state's parameter groups do not fit this model")
    flat = [p for group in params for p in group]
    ids = [i for g in groups for i in g["params"]]
    index = dict(zip(ids, flat))
    for i, slots in opt["state"].items():
        if i not in index or not isinstance(slots, dict):
            raise CheckpointError(f"{where}: the optimiser state names a parameter this model lacks")
        for name, t in slots.items():
            if isinstance(t, torch.Tensor) and t.ndim and t.shape != index[i].shape:
                raise CheckpointError(f"{where}: optimiser slot {name} of parameter {i} has shape "
                                      f"{tuple(t.shape)}, the model's {tuple(index[i].shape)}")
    return state


#: recipe keys a run keeps for life (its model, task and data): never continued when changed.
#: Everything else (epochs, lr and its schedule, budgets, losses, evaluation) continues with
#: ``--force-config``, stated in the log.
FIXED_KEYS = ("model", "task", "data.name", "data.train_split", "data.options", "data.sizes",
              "data.split_options", "train.batch_size", "train.optimizer", "train.balanced_sampler")


def _fixed(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in FIXED_KEYS)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict) and (d or not prefix):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = d
    return out


def _shown(v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    return v if isinstance(v, str) else json.dumps(v)


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass(frozen=True)
class Difference:
    """One way a resumed run differs from the saved one: ``key: saved X, asked Y``."""

    key: str
    saved: Any
    asked: Any
    fixed: bool  # a model / task / label / data difference: never continued

    def __str__(self) -> str:
        return f"{self.key}: saved {_shown(self.saved)}, asked {_shown(self.asked)}"


def run_differences(saved: CheckpointMeta, asked: CheckpointMeta, asked_recipe: dict[str, Any],
                    asked_task: str) -> list[Difference]:
    """Every difference between the saved run (its last checkpoint's metadata) and the run asked
    for: the task, the label names, the built model (name and arguments), then each recipe key
    in recipe order. Fixed differences come first."""
    from ..fileio import json_ready
    from .config import DEFAULTS

    diffs: list[Difference] = []
    saved_task = saved.extra.get("task", saved.recipe.get("task", _ABSENT))
    if saved_task != asked_task:
        diffs.append(Difference("task", saved_task, asked_task, True))
    if list(saved.labels) != list(asked.labels):
        diffs.append(Difference("labels", saved.labels, asked.labels, True))
    if saved.model_name != asked.model_name:
        diffs.append(Difference("model", saved.model_name, asked.model_name, True))
    s_args, a_args = _flatten(json_ready(saved.model_args)), _flatten(json_ready(asked.model_args))
    for key in [*a_args, *[k for k in s_args if k not in a_args]]:
        s, a = s_args.get(key, _ABSENT), a_args.get(key, _ABSENT)
        if not _same(s, a):
            diffs.append(Difference(f"model {asked.model_name} argument {key}", s, a, True))
    s_rec, a_rec = _flatten(json_ready(saved.recipe)), _flatten(json_ready(asked_recipe))
    defaults = _flatten(json_ready(DEFAULTS))
    recipe = []
    for key in [*a_rec, *[k for k in s_rec if k not in a_rec]]:
        s, a = s_rec.get(key, _ABSENT), a_rec.get(key, _ABSENT)
        if s is _ABSENT and key in defaults and _same(defaults[key], a):
            continue  # a key added since the run was saved, at its default
        if not _same(s, a):
            recipe.append(Difference(key, s, a, _fixed(key)))
    return diffs + [d for d in recipe if d.fixed] + [d for d in recipe if not d.fixed]
