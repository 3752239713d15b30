"""The training loop: the paper's recipe, checkpoints that lose nothing, DDP, mixed precision.

Randomness is derived from (seed, epoch, step, rank) rather than carried in global RNG state,
so a run interrupted at any step (or killed at any instant) and resumed from its newest complete
checkpoint generation (:mod:`bregnet.engine.runstate`) produces, on the CPU, the same weights as a
run that was never interrupted. Nothing non-finite is saved: weights, buffers and losses are
checked before every save, and a diverged run stops naming the newest finite checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import math
import signal
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.base import ArrayDataset
from ..errors import BregnetError, CheckpointError, ConfigError, DataError, OutputError, UsageError
from ..fileio import atomic_write, atomic_write_text, is_disk_full
from ..losses import build_loss
from ..models import create_model, split_outputs
from ..preprocess import Preprocess
from .checkpoint import CheckpointMeta, load_checkpoint, nonfinite_report, read_metadata
from .config import select_metric_direction
from .distributed import all_reduce_mean, barrier, setup_distributed
from .evaluate import evaluate_split
from .memory import keep_freed_memory
from .precision import resolve_amp, resolve_channels_last

__all__ = ["Trainer", "TrainingDiverged", "staircase_lr"]


class TrainingDiverged(BregnetError):
    """The loss, the weights or a buffer became NaN or infinite; nothing of it was saved and the
    newest finite checkpoint was left as it was."""


def staircase_lr(base: float, step: int, decay: float, every: int) -> float:
    """The paper's schedule: ``base * decay ** (step // every)``."""
    return base * decay ** (step // every)


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (deterministic, no Python hash randomisation)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


class Trainer:
    """Train one model on one data set according to a config (see :mod:`bregnet.engine.config`).

    Files in ``out_dir``: ``best.safetensors`` and ``last.safetensors`` (+ ``.json``),
    ``checkpoints/<generation>-step-<N>/`` (the consistent state ``resume`` continues from, see
    :mod:`bregnet.engine.runstate`), ``history.csv``, ``config.yaml``.
    ``callbacks`` receive ``on_step(trainer, indices, loss)`` and ``on_epoch(trainer, row)``.
    """

    def __init__(self, cfg: dict[str, Any], out_dir: str | Path, train_ds: ArrayDataset,
                 val_ds: ArrayDataset | None = None, device: str | None = None,
                 callbacks: Sequence[Any] = (), progress: bool = True) -> None:
        self.cfg = cfg
        self.tcfg = cfg["train"]
        self.task = cfg["task"]
        self.out_dir = Path(out_dir)
        self.train_ds, self.val_ds = train_ds, val_ds
        self.callbacks = list(callbacks)
        self.dist, self.device = setup_distributed(device)
        self.progress = progress and self.dist.is_main
        self._check_data()
        self.classes = list(train_ds.classes) if self.task != "dimensional" else []
        from .data import color_of, crop_policy_of

        # the crop the training images were made with (the predictor repeats it on detector
        # boxes) and their colour (a model trained on gray faces is run on gray faces)
        self.preprocess = Preprocess(color=color_of(train_ds), crop=crop_policy_of(train_ds))
        self._build_model()
        self._build_optimisation()
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self._stop_requested = False
        self._running: list = [0.0, 0, 0]  # loss sum, correct, seen within the current epoch
        self.status = "new"
        self.allocator: str | None = None  # what engine.memory did for CPU training (fit)
        self.run_id = uuid.uuid4().hex  # ties a run's saved files together; kept by resume
        self._saved: tuple[str, int, int] | None = None  # newest complete save: (where, step, epoch)
        self._best_source: Path | None = None  # the best checkpoint file saved so far

    # ------------------------------------------------------------------ set-up
    def _check_data(self) -> None:
        ds = self.train_ds
        if len(ds) == 0:
            raise DataError("the training split is empty")
        if self.task in ("categorical", "multitask") and not ds.has_labels:
            raise DataError(f"task {self.task} needs class labels but {ds.name}/{ds.split} has none")
        if self.task in ("dimensional", "multitask") and not ds.has_va:
            raise DataError(f"task {self.task} needs valence/arousal but {ds.name}/{ds.split} has none")

    def _build_model(self) -> None:
        mcfg = self.cfg["model"]
        num_classes = len(self.classes) if self.task != "dimensional" else 0
        args = mcfg.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"model.args must be a mapping, got {args!r}")
        try:
            model = create_model(mcfg["name"], num_classes=num_classes, shortcut=mcfg.get("shortcut"),
                                 va=self.task != "categorical", **args)
        except UsageError as exc:
            raise ConfigError(f"cannot build model {mcfg['name']!r}: {exc}") from None
        torch.manual_seed(_mix(self.tcfg["seed"], 7))  # identical init on every rank
        model._init_weights()
        if self.tcfg["sync_bn"] and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        cuda = self.device.type == "cuda"
        # autocast dtype (None: float32) and memory format for this device: see engine/precision.py
        self.amp_dtype: torch.dtype | None = resolve_amp(self.tcfg["amp"], self.device)
        self.channels_last = resolve_channels_last(self.tcfg["channels_last"], self.device, self.amp_dtype)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: checkpoints, evaluation
        net: nn.Module = model
        if self.dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if cuda else None)
        if self.tcfg["compile"]:
            net = torch.compile(net)
        self.net = net
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.amp_dtype == torch.float16)

    def _build_optimisation(self) -> None:
        t = self.tcfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (decay if p.ndim > 1 else no_decay).append(p)  # conv/linear weights; not BN, bias, a, c
        groups = [{"params": decay, "weight_decay": float(t["weight_decay"])},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt_cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(groups, lr=float(t["lr"]))
        counts = self.train_ds.class_counts if self.task != "dimensional" else None
        if counts is not None and (counts == 0).any():
            missing = [c for c, n in zip(self.classes, counts) if n == 0]
            print(f"bregnet: warning: no training samples for {', '.join(missing)}")
        self.loss_fn = build_loss(
            self.task, class_counts=counts,
            weighting="none" if t["balanced_sampler"] else t["weighting"], loss=t["loss"],
            va_loss=t["va_loss"], va_weight=float(t["va_weight"]), focal_gamma=float(t["focal_gamma"]),
            focal_alpha=float(t["focal_alpha"]), beta=float(t["beta"]),
            label_smoothing=float(t["label_smoothing"]),
        ).to(self.device)
        self.select_metric = t["select_metric"] or ("va_ccc_mean" if self.task == "dimensional" else "accuracy")
        self.select_higher = select_metric_direction(self.select_metric, self.task)  # from the metrics table
        self.use_soft_labels = self._soft_labels_wanted()

    def _soft_labels_wanted(self) -> bool:
        """``train.soft_labels``: auto uses the training set's label distributions when it has
        them (FERPlus votes); true requires them. Validation always scores the hard labels."""
        wanted = self.tcfg.get("soft_labels", "auto")
        if self.task == "dimensional" or wanted is False:
            return False
        has = self.train_ds.has_soft_labels
        if wanted is True and not has:
            raise ConfigError(f"train.soft_labels=true but {self.train_ds.name}/{self.train_ds.split} has no "
                              f"label distributions over its {len(self.classes)} classes")
        return has

    # ------------------------------------------------------------------ batches
    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch`` (disjoint across ranks, equal length)."""
        n = len(self.train_ds)
        if self.tcfg["balanced_sampler"]:
            from ..data.sampler import ClassBalancedSampler

            sampler = ClassBalancedSampler(self.train_ds.labels, seed=int(self.tcfg["seed"]),
                                           rank=self.dist.rank, world_size=self.dist.world_size)
            sampler.set_epoch(epoch)
            return np.fromiter(iter(sampler), dtype=np.int64)
        g = torch.Generator().manual_seed(_mix(self.tcfg["seed"], epoch, 11))
        perm = torch.randperm(n, generator=g).numpy()
        per_rank = n // self.dist.world_size
        return perm[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]

    def local_batch_size(self) -> int:
        return max(1, self.tcfg["batch_size"] // self.dist.world_size)

    def batches_per_epoch(self) -> int:
        n_local = len(self.epoch_order(0)) if self.tcfg["balanced_sampler"] else \
            len(self.train_ds) // self.dist.world_size
        b = self.local_batch_size()
        return max(1, n_local // b) if n_local >= b else 1

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.tcfg["augment"]:
            return images
        from ..data.transforms import PaperAugment

        if not hasattr(self, "_augmenter"):
            self._augmenter = PaperAugment()
        g = torch.Generator(device=images.device).manual_seed(
            _mix(self.tcfg["seed"], self.step, self.dist.rank, 13))
        return self._augmenter(images, g)

    # ------------------------------------------------------------------ state
    def meta(self, metrics: dict[str, Any] | None = None) -> CheckpointMeta:
        ds = self.train_ds
        return CheckpointMeta.for_model(
            self.model, self.classes, preprocess=self.preprocess,
            dataset={"name": ds.name, "train_split": ds.split, "classes": list(ds.classes),
                     "class_counts": [int(c) for c in ds.class_counts] if ds.classes else [],
                     "n_train": len(ds), "synthetic": bool(ds.meta.get("synthetic", False))},
            metrics=metrics or {}, recipe=self.cfg,
            extra={"task": self.task, "epoch": self.epoch, "step": self.step},
        )

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "best_value": self.best_value, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "status": self.status, "running": list(self._running),
            "run_id": self.run_id,
        }

    def _newest_saved(self) -> str:
        """Where the newest complete checkpoint of this run is, for messages."""
        if self._saved is None:
            return f"no checkpoint of this run was saved in {self.out_dir} yet"
        where, step, epoch = self._saved
        return (f"the newest finite checkpoint is {self.out_dir / 'last.safetensors'} = {where} "
                f"(step {step}, epoch {epoch}), left as it was")

    def _check_finite(self, row: dict[str, Any] | None) -> None:
        """TrainingDiverged unless the weights, the buffers (batch-norm running statistics) and
        the losses of ``row`` are finite: nothing non-finite is ever saved as good."""
        bad = nonfinite_report(self.model)
        for key in ("train_loss", "val_loss"):
            value = (row or {}).get(key)
            if bad is None and isinstance(value, float) and not math.isfinite(value):
                bad = f"{key} = {value}"
        if bad is not None:
            raise TrainingDiverged(
                f"the model became non-finite by step {self.step} (epoch {self.epoch}): {bad}; "
                f"not saved; {self._newest_saved()}; try a lower train.lr")

    @contextlib.contextmanager
    def _disk_full_is_one_line(self, what: str):
        """A full disk while saving: one line saying that the previous state is intact."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise OutputError(f"disk full while writing {what} at step {self.step} in {self.out_dir}; "
                              f"{self._newest_saved()}; free space and continue with --resume") from None

    def save_last(self, best: bool = False) -> None:
        """Save the run's state as a new checkpoint generation and publish ``last.safetensors``
        (and ``best.safetensors``; ``best``: this model is the best so far), rank 0 only. The
        state is checked to be finite first; older generations are pruned once it is complete."""
        if not self.dist.is_main:
            return
        from .runstate import next_generation, prune, publish, write_generation

        row = self._last_metrics()
        self._check_finite(row)
        with self._disk_full_is_one_line("the checkpoint"):
            gen = write_generation(
                self.out_dir, next_generation(self.out_dir), step=self.step, epoch=self.epoch,
                run_id=self.run_id, model=self.model, meta=self.meta(row), state=self._state(),
                best_is_last=best, best_source=self._best_source, status=self.status)
            self._saved = (str(gen.path.relative_to(self.out_dir)), gen.step, gen.epoch)
            self._best_source = gen.best_path
            publish(self.out_dir, gen)
        prune(self.out_dir, self.run_id)

    def _last_metrics(self) -> dict[str, Any]:
        return dict(self.history[-1]) if self.history else {}

    def resume(self, force_config: bool = False) -> None:
        """Continue from the newest complete checkpoint generation in ``out_dir``: same step,
        learning rate, optimiser state, data order. The saved run must have this model, task,
        labels and recipe; ``force_config`` continues a changed schedule or budget (epochs, lr,
        ...) and says so, never a changed model, task, label set or data. CheckpointError (one
        line naming the first difference, or what is wrong with the files) otherwise."""
        from .runstate import check_state, find_resumable, publish, run_differences

        found = find_resumable(self.out_dir)
        if self.dist.is_main:
            for note in found.skipped:
                print(f"bregnet: skipped {note}", flush=True)
        saved_meta = read_metadata(found.model_path)
        diffs = run_differences(saved_meta, self.meta(), self.cfg, self.task)
        fixed = [d for d in diffs if d.fixed]
        if fixed:
            raise CheckpointError(f"cannot resume {self.out_dir}: {fixed[0]}: a run continues with the model, "
                                  "task, labels and data it started with (start a new run in another --out)")
        if diffs and not force_config:
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise CheckpointError(f"cannot resume {self.out_dir}: the recipe changed: {diffs[0]}{more}; "
                                  "pass --force-config to continue with the changed recipe")
        if diffs and self.dist.is_main:
            print(f"bregnet: --force-config: continuing {self.out_dir} with a changed recipe: "
                  + "; ".join(str(d).replace(", asked ", ", now ") for d in diffs), flush=True)
        params = [g["params"] for g in self.optimizer.param_groups]
        state = check_state(found.state, str(found.state_path), params)
        model, _ = load_checkpoint(found.model_path, map_location=self.device)
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.param_groups[0]["weight_decay"] = float(self.tcfg["weight_decay"])  # the recipe's
        self.scaler.load_state_dict(state["scaler"])
        for key in ("step", "epoch", "step_in_epoch", "history", "best_value", "best_epoch", "bad_epochs"):
            setattr(self, key, state[key])
        self._running = list(state.get("running", [0.0, 0, 0]))
        self.run_id = state.get("run_id") if isinstance(state.get("run_id"), str) else self.run_id
        self._saved, self._best_source = (found.where, self.step, self.epoch), found.best_path
        self.status = "resumed"
        if found.generation is not None and self.dist.is_main:
            with self._disk_full_is_one_line("last.safetensors"):
                publish(self.out_dir, found.generation)  # the run folder shows the state resumed
        if self.progress:
            print(f"bregnet: resuming {self.out_dir} from {found.where} (step {self.step}, epoch {self.epoch})",
                  flush=True)

    # ------------------------------------------------------------------ loop
    def request_stop(self) -> None:
        """Ask the loop to stop after the current step, saving a resumable checkpoint."""
        self._stop_requested = True

    def _on_sigint(self, signum, frame) -> None:  # first Ctrl-C: stop cleanly; second: abort
        if self._stop_requested:
            raise KeyboardInterrupt
        print("\nbregnet: stopping after this step (Ctrl-C again to abort)...", flush=True)
        self._stop_requested = True

    def _done(self, t0: float) -> bool:
        t = self.tcfg
        if t["max_steps"] is not None and self.step >= t["max_steps"]:
            return True
        if t["max_time_s"] is not None and time.perf_counter() - t0 >= float(t["max_time_s"]):
            return True
        return False

    def fit(self) -> dict[str, Any]:
        """Train until ``epochs`` / ``max_steps`` / ``max_time_s`` / early stopping / Ctrl-C."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            import yaml

            from .runstate import remove_debris

            remove_debris(self.out_dir)  # temporaries and generations of an interrupted save
            atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
        if self.device.type == "cpu":
            # the step's activations are reused from the heap, not re-faulted from the kernel
            self.allocator = keep_freed_memory()
        previous = None
        try:
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread
            pass
        try:
            return self._loop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(self) -> dict[str, Any]:
        t = self.tcfg
        t0 = time.perf_counter()
        bsz = self.local_batch_size()
        tb = self._tensorboard()
        while self.epoch < t["epochs"] and not self._done(t0) and not self._stop_requested:
            order = self.epoch_order(self.epoch)
            n_batches = self.batches_per_epoch()
            bar = self._bar(n_batches)
            if self.step_in_epoch == 0:
                self._running = [0.0, 0, 0]
            run_loss, run_correct, run_seen = self._running
            self.net.train()
            while self.step_in_epoch < n_batches:
                if self._done(t0) or self._stop_requested:
                    break
                idx = order[self.step_in_epoch * bsz:(self.step_in_epoch + 1) * bsz]
                loss, correct, seen = self._train_step(idx)
                run_loss += loss * len(idx)
                run_correct += correct
                run_seen += seen
                self._running = [run_loss, run_correct, run_seen]
                for cb in self.callbacks:
                    getattr(cb, "on_step", lambda *a: None)(self, idx, loss)
                if bar is not None:
                    post = {"loss": f"{run_loss / max(1, self.step_in_epoch * bsz):.3f}"}
                    if run_seen:
                        post["acc"] = f"{run_correct / run_seen:.3f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
            if bar is not None:
                bar.close()
            done_batches = self.step_in_epoch
            train_loss = run_loss / max(1, done_batches * bsz)
            train_acc = run_correct / run_seen if run_seen else float("nan")
            if done_batches < n_batches:  # interrupted or out of budget mid-epoch
                if self._stop_requested:
                    self.status = "interrupted"
                    self.save_last()
                else:  # budget spent: score what we have; resuming continues mid-epoch
                    self.status = "budget"
                    if done_batches:
                        self._end_epoch(train_loss, train_acc, t0, partial=True)
                    else:
                        self.save_last()
                break
            row = self._end_epoch(train_loss, train_acc, t0)
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        tb.add_scalar(k, v, self.epoch)
            for cb in self.callbacks:
                getattr(cb, "on_epoch", lambda *a: None)(self, row)
            if t["early_stopping"] and self.bad_epochs >= int(t["early_stopping"]):
                self.status = "early-stopped"
                break
        else:
            if self._stop_requested:
                self.status = "interrupted"
            elif self.epoch < t["epochs"] and self._done(t0):
                self.status = "budget"
            else:
                self.status = "finished"
        if self.status in ("new", "resumed"):
            self.status = "finished"
        barrier(self.dist)
        if tb is not None:
            tb.close()
        return {"status": self.status, "step": self.step, "epoch": self.epoch,
                "best_epoch": self.best_epoch, "best_value": self.best_value,
                "select_metric": self.select_metric, "out_dir": str(self.out_dir)}

    def _bar(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{self.tcfg['epochs']}",
                    unit="batch", leave=False, dynamic_ncols=True)

    def _train_step(self, idx: np.ndarray) -> tuple[float, int, int]:
        t = self.tcfg
        lr = staircase_lr(float(t["lr"]), self.step, float(t["lr_decay"]), int(t["lr_decay_steps"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, labels, va = self.train_ds.batch(idx)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        va = va.to(self.device, non_blocking=True)
        # the loss gets (B, K) label distributions with train.soft_labels; accuracy the hard labels
        targets = self.train_ds.soft_batch(idx).to(self.device, non_blocking=True) \
            if self.use_soft_labels else labels
        x = self.preprocess.normalize(self._augment(images))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with ctx:
            out = self.net(x)
            loss = self.loss_fn(out, targets, va)
        if not torch.isfinite(loss.detach()).all():
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.step} (epoch {self.epoch + 1}); stopped; "
                f"{self._newest_saved()}; try a lower train.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.step_in_epoch += 1
        logits, _ = split_outputs(out, self.task != "dimensional", self.task != "categorical")
        correct = seen = 0
        if logits is not None:
            valid = labels >= 0
            correct = int((logits.detach().argmax(1) == labels)[valid].sum())
            seen = int(valid.sum())
        return float(loss.detach()), correct, seen

    def evaluate(self, ds: ArrayDataset) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
        """All metrics of the model on ``ds`` (plus ``loss``): :func:`bregnet.engine.evaluate.evaluate_split`."""
        return evaluate_split(self.model, ds, self.preprocess, self.task, self.classes, self.loss_fn,
                              self.tcfg["eval_batch_size"], self.device, self.tcfg["tta_flip"],
                              self.amp_dtype)

    def _end_epoch(self, train_loss: float, train_acc: float, t0: float,
                   partial: bool = False) -> dict[str, Any]:
        """Validate, record history, keep the best and the last checkpoint. ``partial``: the
        epoch was cut short by a step or time budget (epoch counters are left as they are, so a
        resumed run continues mid-epoch)."""
        if not partial:
            self.epoch += 1
            self.step_in_epoch = 0
        self._sync_buffers()
        loss_t = all_reduce_mean(torch.tensor([train_loss, train_acc], dtype=torch.float64), self.dist)
        row: dict[str, Any] = {
            "epoch": self.epoch + (self.step_in_epoch / self.batches_per_epoch() if partial else 0),
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(loss_t[0]), "train_accuracy": float(loss_t[1]),
            "time_s": round(time.perf_counter() - t0, 2),
        }
        self._check_finite(row)  # a non-finite model is neither scored nor saved
        improved = False
        if self.val_ds is not None and self.dist.is_main:
            metrics, _, _ = self.evaluate(self.val_ds)
            row.update({f"val_{k}": v for k, v in metrics.items()
                        if isinstance(v, (int, float)) and "/" not in k})
            value = metrics.get(self.select_metric)
            if value is not None and math.isfinite(value):
                better = (self.best_value is None or
                          (value > self.best_value if self.select_higher else value < self.best_value))
                if better:
                    self.best_value, self.best_epoch, improved = float(value), self.epoch, True
        self._check_finite(row)  # the validation loss too, before anything is recorded
        if self.val_ds is not None:  # without validation there is nothing to stop early on
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
        self.history.append(row)
        if self.dist.is_main:
            with self._disk_full_is_one_line("history.csv"):
                self._write_history()
            # until the selection metric has had a finite value, the latest model stands as best
            self.save_last(best=improved or self.val_ds is None or self.best_epoch is None)
            if self.progress:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                  if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                           "val_f1_macro", "val_va_ccc_mean"))
                print(f"epoch {self.epoch}: {shown}{' (best)' if improved else ''}", flush=True)
        bad = torch.tensor([self.bad_epochs], dtype=torch.float64)
        if self.dist.enabled:  # every rank follows rank 0's early-stopping count
            torch.distributed.broadcast(bad, src=0)
            self.bad_epochs = int(bad.item())
        return row

    def _sync_buffers(self) -> None:
        """Average batch-norm running statistics over ranks, so every rank (and the checkpoint)
        holds the same model; DDP only broadcasts them before each forward pass."""
        if not self.dist.enabled:
            return
        for buf in self.model.buffers():
            if buf.is_floating_point():
                buf.copy_(all_reduce_mean(buf, self.dist))

    def _write_history(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.history)

        atomic_write(self.out_dir / "history.csv", write)

    def _tensorboard(self):
        if not (self.tcfg["log_tensorboard"] and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: CSV only
            return None
        return SummaryWriter(str(self.out_dir / "tb"))


def build_trainer(cfg: dict[str, Any], out_dir: str | Path, device: str | None = None,
                  progress: bool = True, callbacks: Sequence[Any] = ()) -> Trainer:
    """Load the configured data splits and make a :class:`Trainer`."""
    from .data import load_split

    train_ds = load_split(cfg["data"], cfg["data"]["train_split"], progress=progress)
    val_split = cfg["data"].get("val_split")
    val_ds = load_split(cfg["data"], val_split, progress=progress) if val_split else None
    return Trainer(cfg, out_dir, train_ds, val_ds, device=device, progress=progress, callbacks=callbacks)

