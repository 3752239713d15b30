"""``bregnet serve``: the HTTP service and its page.

:func:`create_app` builds the ASGI application (Starlette) around a
:class:`~bregnet.infer.Predictor`; :func:`serve` runs it under uvicorn in the foreground and
:class:`BackgroundServer` in a thread. Needs the ``serve`` extra (``pip install 'bregnet[serve]'``):
Starlette, uvicorn, prometheus-client and python-multipart; none of them is imported by
``import bregnet``.

>>> from bregnet import Predictor                                                # doctest: +SKIP
>>> from bregnet.serve import BackgroundServer, ServeSettings, create_app        # doctest: +SKIP
>>> app = create_app(Predictor.from_checkpoint("best.safetensors"), ServeSettings())  # doctest: +SKIP
>>> with BackgroundServer(app) as srv:                                           # doctest: +SKIP
...     print(srv.url)
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackgroundServer", "Limits", "ServeSettings", "create_app", "missing_dependencies",
           "serve"]

#: import name -> distribution name of what the service needs beyond bregnet's core.
REQUIREMENTS = {"starlette": "starlette", "uvicorn": "uvicorn",
                "prometheus_client": "prometheus-client", "python_multipart": "python-multipart"}


def missing_dependencies() -> list[str]:
    """Distributions of the ``serve`` extra that cannot be imported."""
    import importlib

    missing = []
    for module, dist in REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    return missing


def __getattr__(name: str) -> Any:
    if name in ("ServeSettings", "create_app"):
        from . import app

        return getattr(app, name)
    if name in ("BackgroundServer", "serve"):
        from . import server

        return getattr(server, name)
    if name == "Limits":
        from .limits import Limits

        return Limits
    raise AttributeError(name)
