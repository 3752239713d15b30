"""Running the application under uvicorn: in the foreground (``bregnet serve``) or in a thread.

The listening socket is bound here, before uvicorn starts, so that a port in use or a bad host is
an ``OSError`` the CLI reports in one line (uvicorn itself would log and ``sys.exit(1)``), and so
that port 0 picks a free port whose number is known. On SIGTERM or Ctrl-C uvicorn stops accepting
connections, finishes the requests in flight (streamed videos included, up to
``graceful_timeout`` seconds), then the batcher finishes its queue and stops.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

__all__ = ["BackgroundServer", "bind_socket", "is_loopback", "serve"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6; port 0 = any free port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config(app: Any, log_level: str, access_log: bool, graceful_timeout: float | None) -> Any:
    import uvicorn

    return uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                          timeout_graceful_shutdown=graceful_timeout, timeout_keep_alive=5,
                          server_header=False, proxy_headers=False)


def serve(app: Any, sock: socket.socket, log_level: str = "info", access_log: bool = True,
          graceful_timeout: float | None = 60.0) -> bool:
    """Serve ``app`` on the bound ``sock`` until SIGTERM/SIGINT (blocking; call from the main
    thread so that uvicorn installs its signal handlers). False if the application failed to
    start (its lifespan raised)."""
    import uvicorn

    server = uvicorn.Server(_config(app, log_level, access_log, graceful_timeout))
    server.run(sockets=[sock])
    return bool(server.started)


class BackgroundServer:
    """The application served by uvicorn in a daemon thread (tests, benchmarks, notebooks)::

        with BackgroundServer(app) as srv:
            httpx.get(srv.url + "/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", graceful_timeout: float | None = 10.0) -> None:
        import uvicorn

        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(_config(app, log_level, False, graceful_timeout))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="bregnet-serve", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 120.0) -> "BackgroundServer":
        self.thread.start()
        t_end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server failed to start (see its log)")
            if time.monotonic() > t_end:
                raise RuntimeError(f"the server did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop, as on SIGTERM: requests in flight are finished first."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
