"""``bregnet serve`` as a command: arguments, missing extras, a port in use, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infer_helpers import make_checkpoint, make_video

from bregnet.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve-cli") / "tiny.safetensors", micro=True)


def test_help_lists_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--api-key" in out and "--max-batch" in out and "127.0.0.1" in out


@pytest.mark.parametrize("argv", [
    ["--port", "70000"], ["--max-batch", "0"], ["--max-wait-ms", "-1"], ["--det-threshold", "2"],
    ["--max-upload-mb", "0"], ["--timeout", "nan"], ["--device", "tpu"],
])
def test_bad_arguments_exit_2(ckpt, argv, capsys):
    assert main(["serve", str(ckpt), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bregnet serve: error:") and len(err.splitlines()) == 1


def test_missing_extra_is_one_line(ckpt, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)    # as if not installed
    assert main(["serve", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'bregnet[serve]'" in err and "uvicorn" in err


def test_port_in_use_and_bad_model_are_one_line(ckpt, tmp_path, capsys):
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serve: error:" in err
    bad = tmp_path / "not-a-model.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["serve", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serve: error:" in err


def test_sigterm_finishes_the_stream_in_flight(ckpt, tmp_path):
    """A real `bregnet serve` process: SIGTERM while a video is streaming lets it finish."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    video = make_video(tmp_path / "clip.avi", 20, faces=1)
    env = dict(os.environ, BREGNET_API_KEY="k", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bregnet", "serve", str(ckpt), "--port", "0", "--no-access-log"],
        stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    try:
        seen = ""
        while True:
            line = proc.stderr.readline()
            seen += line
            m = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
            if m or not line:
                break
        assert m, seen
        url = f"http://127.0.0.1:{m.group(1)}"
        t_end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < t_end and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        model = httpx.get(url + "/v1/model", headers={"Authorization": "Bearer k"}).json()
        assert model["source"] == {"kind": "checkpoint", "name": ckpt.name}
        assert httpx.get(url + "/v1/model").status_code == 401     # the key from the environment
        records = []
        with httpx.stream("POST", url + "/v1/predict/video", content=video.read_bytes(),
                          headers={"Authorization": "Bearer k"}, timeout=60) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            records.append(json.loads(next(lines)))
            proc.send_signal(signal.SIGTERM)
            for text in lines:
                records.append(json.loads(text))
        assert "error" not in records[-1]
        assert [rec["frame"] for rec in records] == list(range(20))
        proc.wait(timeout=30)
        assert proc.returncode in (0, -signal.SIGTERM)
        log = proc.stderr.read()
        # the stream was still open when the signal came, and the shutdown was the graceful one
        assert "Waiting for connections to close" in log, log
        assert "Application shutdown complete" in log, log
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
