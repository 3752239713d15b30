"""Named pretrained weights: the registry, their verified download, the cache, name resolution.

>>> import bregnet
>>> bregnet.list_weights()                                   # doctest: +SKIP
['bregnext50.affectnet']
>>> bregnet.get_weights("bregnext50.affectnet").labels       # doctest: +SKIP

``bregnet weights download NAME`` (or :func:`download_weights`) is the only code in bregnet that
touches the network, and only when asked. A downloaded name works wherever a checkpoint path
does (:func:`resolve_checkpoint` is called by ``load_checkpoint``, ``read_metadata`` and
``Predictor.from_checkpoint``).
"""

from .cache import (
    ENV_HOME,
    bregnet_home,
    checkpoint_file,
    is_installed,
    remove_weights,
    resolve_checkpoint,
    weights_dir,
)
from .download import download_weights
from .pretrained import load_pretrained
from .registry import (
    ReportedFigure,
    SourceFile,
    WeightsEntry,
    WeightsError,
    WeightsSource,
    get_weights,
    list_weights,
    register_weights,
    unregister_weights,
)

__all__ = [
    "ENV_HOME",
    "ReportedFigure",
    "SourceFile",
    "WeightsEntry",
    "WeightsError",
    "WeightsSource",
    "bregnet_home",
    "checkpoint_file",
    "download_weights",
    "get_weights",
    "is_installed",
    "list_weights",
    "load_pretrained",
    "register_weights",
    "remove_weights",
    "resolve_checkpoint",
    "unregister_weights",
    "weights_dir",
]
