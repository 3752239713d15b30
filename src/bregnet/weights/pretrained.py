"""``create_model(name, pretrained=...)``: a network built from a weights name or a checkpoint."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import UsageError

__all__ = ["load_pretrained"]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as the metadata stores them


def load_pretrained(architecture: str, weights: str | os.PathLike, **given: Any) -> Any:
    """The ``architecture`` network with the weights ``weights`` (a weights name or a checkpoint
    path) loaded, in training mode like any new model (call ``.eval()`` for inference).

    Its arguments (classes, heads, layout) come from the weights; an argument given here that
    differs raises :class:`UsageError` instead of silently building another network. Nothing is
    downloaded: a name not installed yet raises with the ``bregnet weights download`` command.
    """
    from ..engine.checkpoint import load_checkpoint

    model, meta = load_checkpoint(weights)
    if meta.model_name != architecture:
        raise UsageError(f"the weights {os.fspath(weights)} are for {meta.model_name}, not "
                         f"{architecture}: use create_model({meta.model_name!r}, "
                         f"pretrained={os.fspath(weights)!r})")
    for key, value in given.items():
        if value is None:
            continue
        have = meta.model_args.get(key)
        if _plain(value) != _plain(have):
            raise UsageError(f"the weights {os.fspath(weights)} have {key}={have!r}; "
                             f"create_model(..., pretrained=...) cannot change it to {value!r} "
                             f"(build the model without pretrained= to train a new one)")
    return model.train()
