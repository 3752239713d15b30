"""Resources stay bounded on hostile input (issue 11, part B).

Every case runs in a fresh interpreter under an address-space limit (``resource.setrlimit``) and a
timeout, so that the code before the fix (which allocated gigabytes, or hung) fails the test instead
of taking the test run down: a tiny PNG of 60000 x 1 pixels taken whole as a square face, a PNG
header announcing 60000 x 60000, class indices of 10^8 and 10^23, checkpoint metadata describing
a stage of width 30000 or 100,000 units, ``/dev/zero``, ``/dev/urandom`` and FIFOs as images and
as checkpoints. The limits themselves can be raised by environment variables (bregnet.limits).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from infer_helpers import make_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")
MEMORY = 3 << 30  # address space of each child: python + torch + the model fit, gigabytes do not


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run(argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``argv`` in a child process under the memory limit; a timeout is a test failure."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_limit_memory, env={**os.environ, "PYTHONPATH": SRC, **env})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(map(str, argv))} did not finish in {timeout} s")


def bregnet(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "bregnet.cli", *map(str, args)], timeout, **env)


_MANY = """
import contextlib, io, json, sys
from bregnet.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


def bregnet_many(*argvs: list, timeout: float = 180, **env: str) -> list[tuple[int, str]]:
    """Several ``bregnet`` commands in one child process (one start-up) under the memory limit:
    ``[(exit code, stderr), ...]``."""
    r = run([sys.executable, "-c", _MANY, json.dumps([[str(a) for a in argv] for argv in argvs])],
            timeout, **env)
    assert r.returncode == 0, r.stderr[-3000:]
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", code], timeout, **env)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """A black RGB PNG of ``width x height``; ``rows`` < height writes only that many rows of
    pixel data (the header still announces the full size)."""
    raw = b"".join(b"\x00" + bytes(width * 3) for _ in range(height if rows is None else rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "micro.safetensors", micro=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two ordinary images and two hostile ones: 60000 x 1 (254 bytes) and a 60000 x 60000 header."""
    d = tmp_path_factory.mktemp("hostile")
    wide = png(60000, 1)
    assert len(wide) == 254
    (d / "b_wide.png").write_bytes(wide)
    (d / "c_bomb.png").write_bytes(png(60000, 60000, rows=1))
    for name in ("a_ok.png", "d_ok.png"):
        assert cv2.imwrite(str(d / name), np.full((48, 40, 3), 120, np.uint8))
    return d


def test_a_folder_with_hostile_images_goes_on(ckpt, folder, tmp_path):
    out = tmp_path / "faces.csv"
    r = bregnet("predict", ckpt, folder, "--detector", "none", "-o", out)
    assert r.returncode == 0, r.stderr
    rows = out.read_text().splitlines()
    sources = [Path(line.split(",")[0]).name for line in rows[1:]]
    # the 60000 x 1 image is cropped within bounded memory; the bomb is skipped with its reason
    assert sources == ["a_ok.png", "b_wide.png", "d_ok.png"]
    assert "c_bomb.png" in r.stderr and "60000 x 60000" in r.stderr and "BREGNET_MAX_IMAGE_PIXELS" in r.stderr
    assert "1 unreadable input(s) skipped" in r.stderr


def test_the_pixel_and_file_size_limits_are_settable(ckpt, folder, tmp_path):
    (rc, err), = bregnet_many(["predict", ckpt, folder / "a_ok.png", "--detector", "none"],
                              BREGNET_MAX_IMAGE_PIXELS="100")
    assert rc == 2 and "over the limit of 100" in err
    assert len(err.strip().splitlines()) == 2  # the skip warning, then the one-line error
    (rc, err), = bregnet_many(["predict", ckpt, folder / "a_ok.png", "--detector", "none"],
                              BREGNET_MAX_IMAGE_BYTES="64")
    assert rc == 2 and "BREGNET_MAX_IMAGE_BYTES" in err


def test_square_crop_of_a_60000_by_1_image_is_bounded():
    code = ("import numpy as np\n"
            "from bregnet.crop import crop_face\n"
            "from bregnet.preprocess import CropPolicy\n"
            "img = np.full((1, 60000, 3), 200, np.uint8)\n"
            "for border in ('constant', 'replicate', 'clamp'):\n"
            "    for align in (False, True):\n"
            "        out = crop_face(img, (0, 0, 60000, 1), CropPolicy(0.1, True, align, border), 64,\n"
            "                        np.array([[10.0, 0.0], [59990.0, 0.5]] + [[0.0, 0.0]] * 3))\n"
            "        assert out.shape == (64, 64, 3), out.shape\n"
            "print('ok')\n")
    r = python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_huge_class_indices_are_refused_before_building_names(tmp_path):
    assert cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cases = {"100000000": "100,000,001 classes", "99999999999999999999999": "classes, over the limit"}
    for i, label in enumerate(cases):
        (tmp_path / f"list{i}.csv").write_text(f"path,label\na.png,0\na.png,{label}\n")
    code = ("from bregnet.data.registry import open_reader\n"
            "from bregnet.errors import LimitError\n"
            f"for i in range({len(cases)}):\n"
            "    try:\n"
            f"        open_reader('csv', {str(tmp_path)!r} + f'/list{{i}}.csv', 'all')\n"
            "    except LimitError as exc:\n"
            "        print(exc)\n")
    r = python(code, timeout=60)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == len(cases), r.stderr
    for i, (line, shown) in enumerate(zip(lines, cases.values())):
        assert f"list{i}.csv:3" in line and shown in line and "BREGNET_MAX_CLASSES" in line


def test_class_limit_is_settable(tmp_path):
    assert cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "list.csv").write_text("path,label\na.png,0\na.png,20\n")
    code = ("from bregnet.data.registry import open_reader\n"
            f"print(len(open_reader('csv', {str(tmp_path / 'list.csv')!r}, 'all').classes))\n")
    assert python(code, BREGNET_MAX_CLASSES="10").returncode == 1
    r = python(code, BREGNET_MAX_CLASSES="21")
    assert r.returncode == 0 and r.stdout.strip() == "21", r.stderr


def _tampered(src: Path, dst: Path, edit) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        doc = json.loads(f.metadata()["bregnet"])
    edit(doc["model"]["args"])
    save_file(load_file(str(src)), str(dst), metadata={"bregnet": json.dumps(doc)})
    return dst


@pytest.mark.parametrize("case, edit, word", [
    ("a stage of width 30000", lambda a: a["stages"][-1].__setitem__(1, 30000), "BREGNET_MAX_MODEL_PARAMS"),
    ("100,000 units", lambda a: a["stages"][0].__setitem__(0, 100_000), "BREGNET_MAX_MODEL_UNITS"),
    ("10^9 classes", lambda a: a.update(num_classes=10 ** 9), "classes"),
])
def test_model_size_from_metadata_is_checked_before_building(ckpt, tmp_path, case, edit, word):
    bad = _tampered(ckpt, tmp_path / "bad.safetensors", edit)
    img = tmp_path / "a.png"
    assert cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    results = bregnet_many(["predict", bad, img], ["evaluate", bad, "--out", tmp_path / "ev"],
                           ["export", bad, "--onnx", tmp_path / "m.onnx"], timeout=90)
    for rc, err in results:
        assert rc == 2, (case, err[-2000:])
        assert word in err and len(err.strip().splitlines()) == 1, err


def test_model_size_from_a_recipe_is_checked_before_building():
    code = ("from bregnet import create_model\n"
            "create_model('bregnext32', stages=[[1, 32], [1, 30000]])\n")
    r = python(code, timeout=60)
    assert r.returncode == 1 and "LimitError" in r.stderr and "estimated before building" in r.stderr


def test_devices_and_fifos_are_refused_as_images_and_as_checkpoints(ckpt, tmp_path):
    img = tmp_path / "a.png"
    assert cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    hostile = [d for d in ("/dev/zero", "/dev/urandom") if os.path.exists(d)]
    for name in ("pipe.png", "pipe.mp4", "pipe"):  # a FIFO blocks a reader for ever
        os.mkfifo(tmp_path / name)
        hostile.append(str(tmp_path / name))
    as_input = [["predict", ckpt, bad, img] for bad in hostile]
    as_checkpoint = [[cmd, bad, *rest] for bad in hostile for cmd, *rest in
                     (("predict", img), ("evaluate", "--out", tmp_path / "ev"),
                      ("export", "--onnx", tmp_path / "m.onnx"))]
    results = bregnet_many(*as_input, *as_checkpoint, timeout=120)
    for argv, (rc, err) in zip(as_input, results):  # skipped with its reason, the rest goes on
        assert rc == 0 and "not a regular file" in err and str(argv[2]) in err, (argv, err)
    for argv, (rc, err) in zip(as_checkpoint, results[len(as_input):]):
        assert rc == 2 and "not a regular file" in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_checkpoint_headers_are_bounded(ckpt, tmp_path):
    img = tmp_path / "a.png"
    assert cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    fake = tmp_path / "fake.safetensors"  # announces a header of 2**60 bytes
    fake.write_bytes((2 ** 60).to_bytes(8, "little") + b"{}")
    (rc, err), (rc2, err2) = bregnet_many(["predict", ckpt, img], ["evaluate", fake],
                                          BREGNET_MAX_METADATA_BYTES="100")
    assert rc == 2 and "checkpoint header" in err and "BREGNET_MAX_METADATA_BYTES" in err
    assert rc2 == 2 and "truncated" in err2 and len(err2.strip().splitlines()) == 1
