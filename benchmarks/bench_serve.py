"""Load and fuzz test of ``bregnet serve`` on loopback.

Starts real ``bregnet serve`` processes (``bregnext50``, 8 classes, random weights unless
``--model`` is given: speed does not depend on the weights) on free loopback ports, then:

1. **load**: 1, 8 and 32 concurrent clients (``--concurrency``) each sending real face photos
   (the astronaut and the cameraman from scikit-image, mirrored, alone and as a four-face group,
   as JPEG) to ``POST /v1/predict``, ``--requests`` per level, once against a server with dynamic
   batching (``--max-batch``, default 32) and once against one with ``--max-batch 1`` (one
   request's faces at a time): requests/s, p50/p95/p99 latency, errors, faces per batch,
   and the batching gain (requests/s batched / unbatched);
2. **memory**: the server's resident memory (from its ``/metrics``) before and after
   ``--memory-requests`` more requests (default 10,000), sampled ten times on the way;
3. **fuzz**: ``--fuzz`` (default 1,000) random and corrupted uploads (random bytes, truncated,
   bit-flipped and header-mangled JPEG/PNG/GIF/TIFF/BMP, decompression-bomb headers, broken
   multipart bodies, random bytes and mangled files to the video endpoint): the status codes
   seen (no 5xx allowed), the server alive and answering a real photo afterwards, memory before
   and after.

The load generator runs on the same machine (httpx, asyncio), so on a small machine it takes
CPU from the server: figures are for this loopback set-up, not for a server alone.

    python benchmarks/bench_serve.py                                   # the full run
    python benchmarks/bench_serve.py --requests 40 --memory-requests 300 --fuzz 300   # small

Exit code 1 if a 5xx or a transport error was seen in the fuzz run or the server died.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]


# -- inputs -------------------------------------------------------------------------------------
def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def face_photos() -> list[tuple[str, bytes, int]]:
    """(name, JPEG bytes, faces in it) for real face photos of scikit-image."""
    from skimage import data

    a = np.ascontiguousarray(data.astronaut())
    c = np.ascontiguousarray(np.repeat(data.camera()[:, :, None], 3, axis=2))
    group = np.vstack([np.hstack([a, c]), np.hstack([c[:, ::-1], a[:, ::-1]])])
    return [("astronaut", _jpeg(a), 1), ("astronaut-mirrored", _jpeg(a[:, ::-1]), 1),
            ("cameraman", _jpeg(c), 1), ("group-of-4", _jpeg(group), 4)]


def fuzz_cases(n: int, seed: int = 0) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """``n`` hostile uploads: (kind, path, body, headers)."""
    import struct
    import zlib

    from skimage import data

    rng = random.Random(seed)
    a = np.ascontiguousarray(data.astronaut()[:160, 160:320])
    seeds = {ext: _encode(a, ext) for ext in (".jpg", ".png", ".bmp", ".tiff")}
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="GIF")
    seeds[".gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="WEBP")
    seeds[".webp"] = buf.getvalue()

    def png_bomb(w: int, h: int) -> bytes:
        def chunk(kind: bytes, payload: bytes) -> bytes:
            return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
                ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))

    def flip(b: bytes, k: int) -> bytes:
        arr = bytearray(b)
        for _ in range(k):
            i = rng.randrange(len(arr))
            arr[i] ^= 1 << rng.randrange(8)
        return bytes(arr)

    def mangle_header(b: bytes) -> bytes:
        arr = bytearray(b)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(64, len(arr)))
            arr[i] = rng.randrange(256)
        return bytes(arr)

    def multipart(body: bytes, broken: bool) -> tuple[bytes, dict[str, str]]:
        bnd = "b" + str(rng.randrange(10**9))
        text = (f"--{bnd}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + body + f"\r\n--{bnd}--\r\n".encode()
        if broken:
            cut = rng.randrange(len(text))
            text = text[:cut] + os.urandom(rng.randint(0, 64))
        return text, {"Content-Type": f"multipart/form-data; boundary={bnd}"}

    kinds = ["random", "truncated", "bitflip", "header", "bomb", "multipart", "video-random",
             "video-mangled", "wrong-type", "empty"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ext = rng.choice(list(seeds))
        src = seeds[ext]
        headers = {"Content-Type": rng.choice(["image/jpeg", "application/octet-stream",
                                               "text/plain", "image/png"])}
        path = "/v1/predict"
        if kind == "random":
            body = os.urandom(rng.randint(1, 50_000))
        elif kind == "truncated":
            body = src[:rng.randrange(1, len(src))]
        elif kind == "bitflip":
            body = flip(src, rng.randint(1, 50))
        elif kind == "header":
            body = mangle_header(src)
        elif kind == "bomb":
            body = png_bomb(rng.choice([60_000, 100_000, 2**31 - 1]), rng.choice([60_000, 2**30]))
        elif kind == "multipart":
            body, headers = multipart(flip(src, rng.randint(0, 5)), broken=rng.random() < 0.5)
        elif kind == "video-random":
            path = "/v1/predict/video"
            body = rng.choice([b"RIFF\0\0\0\0AVI ", b"\0\0\0\x18ftypmp42", b"\x1a\x45\xdf\xa3",
                               b""]) + os.urandom(rng.randint(0, 20_000))
        elif kind == "video-mangled":
            path = "/v1/predict/video"
            body = flip(seeds[".jpg"], 3)
        elif kind == "wrong-type":
            body = rng.choice([b"%PDF-1.4\n" + os.urandom(2000), b"%!PS-Adobe-3.0 EPSF-3.0\n",
                               b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"GIF89a" + os.urandom(9)])
        else:
            body = b""
        out.append((kind, path, body, headers))
    return out


# -- the server ---------------------------------------------------------------------------------
class Server:
    """A ``bregnet serve`` subprocess on a free loopback port."""

    def __init__(self, model: Path, extra: list[str], log: Path) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # docs/inference.md: threads must not spin
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bregnet", "serve", str(model), "--port", "0",
             "--no-access-log", "--log-level", "warning", *extra],
            stderr=subprocess.PIPE, stdout=self.log, text=True, errors="replace", env=env)
        seen = ""
        while True:
            line = self.proc.stderr.readline()
            seen += line
            m = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                break
            if not line:
                raise RuntimeError(f"server did not start: {seen}")
        self.url = f"http://127.0.0.1:{m.group(1)}"
        import threading

        threading.Thread(target=self._copy_log, daemon=True).start()
        import httpx

        t_end = time.monotonic() + 300
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > t_end:
                raise RuntimeError("server did not become healthy")
            time.sleep(0.1)

    def _copy_log(self) -> None:
        for line in self.proc.stderr:
            self.log.write(line)
            self.log.flush()

    def metrics(self) -> dict[str, float]:
        import httpx

        out: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def rss_mb(self) -> float:
        return self.metrics()["process_resident_memory_bytes"] / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- clients ------------------------------------------------------------------------------------
async def _load(url: str, photos: list, concurrency: int, total: int) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = iter(range(total))

    async def client(c: httpx.AsyncClient, k: int) -> None:
        for i in counter:
            name, body, _ = photos[(i + k) % len(photos)]
            t0 = time.perf_counter()
            try:
                r = await c.post(url + "/v1/predict", content=body,
                                 headers={"Content-Type": "image/jpeg"})
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            statuses[key] = statuses.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    errors = sum(v for k, v in statuses.items() if k != "200")
    return {"concurrency": concurrency, "requests": total, "wall_s": wall,
            "rps": total / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "errors": errors, "statuses": statuses}


async def _fuzz(url: str, cases: list, concurrency: int) -> dict:
    import httpx

    statuses: dict[str, dict[str, int]] = {}
    it = iter(cases)

    async def client(c: httpx.AsyncClient) -> None:
        for kind, path, body, headers in it:
            try:
                r = await c.post(url + path, content=body, headers=headers)
                key = str(r.status_code)
                if r.status_code >= 400:
                    assert "error" in r.json(), r.text[:200]
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            per = statuses.setdefault(kind, {})
            per[key] = per.get(key, 0) + 1

    async with httpx.AsyncClient(timeout=120) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"cases": len(cases), "wall_s": wall, "statuses": statuses}


def _batch_stats(before: dict, after: dict) -> float:
    calls = after.get("bregnet_batch_size_count", 0) - before.get("bregnet_batch_size_count", 0)
    faces = after.get("bregnet_batch_size_sum", 0) - before.get("bregnet_batch_size_sum", 0)
    return faces / calls if calls else float("nan")


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="checkpoint or .onnx (default: a random bregnext50)")
    ap.add_argument("--concurrency", default="1,8,32", help="client counts (default 1,8,32)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--fuzz", type=int, default=1000, help="hostile uploads (default 1000)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="server detection threads")
    ap.add_argument("--server-args", default="", help="more `bregnet serve` arguments")
    ap.add_argument("--no-unbatched", action="store_true", help="skip the --max-batch 1 server")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    import httpx
    import torch

    from bregnet import create_model
    from bregnet.engine.checkpoint import CheckpointMeta, save_checkpoint

    photos = face_photos()
    report: dict = {"info": {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "photos": [(n, len(b), f) for n, b, f in photos], "args": vars(args) | {
            "model": str(args.model) if args.model else "bregnext50 (random weights)",
            "json": str(args.json) if args.json else None}}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            torch.manual_seed(0)
            net = create_model("bregnext50", num_classes=8).eval()
            model = save_checkpoint(tmp / "bregnext50.safetensors", net,
                                    CheckpointMeta.for_model(net, LABELS), write_json=False)
        common = ["--workers", str(args.workers), "--max-wait-ms", str(args.max_wait_ms),
                  *args.server_args.split()]
        configs = [("batched", ["--max-batch", str(args.max_batch), *common])]
        if not args.no_unbatched:
            configs.append(("max-batch-1", ["--max-batch", "1", *common]))
        report["load"] = {}
        for name, extra in configs:
            srv = Server(model, extra, tmp / f"{name}.log")
            try:
                # warm-up: every photo once
                for _, body, _ in photos:
                    httpx.post(srv.url + "/v1/predict", content=body, timeout=120)
                rows = []
                for c in levels:
                    before = srv.metrics()
                    row = asyncio.run(_load(srv.url, photos, c, args.requests))
                    row["faces_per_batch"] = _batch_stats(before, srv.metrics())
                    rows.append(row)
                    print(f"[{name}] {json.dumps(row)}", flush=True)
                report["load"][name] = rows
                if name == "batched":
                    # memory over many requests
                    samples = [srv.rss_mb()]
                    step = max(1, args.memory_requests // 10)
                    done = 0
                    errors = 0
                    t0 = time.perf_counter()
                    while done < args.memory_requests:
                        n = min(step, args.memory_requests - done)
                        errors += asyncio.run(_load(srv.url, photos, 8, n))["errors"]
                        done += n
                        samples.append(srv.rss_mb())
                    report["memory"] = {"requests": done, "errors": errors,
                                        "wall_s": time.perf_counter() - t0,
                                        "rss_mb_samples": samples,
                                        "rss_mb_before": samples[0], "rss_mb_after": samples[-1]}
                    print(f"[memory] {json.dumps(report['memory'])}", flush=True)
                    # fuzz
                    rss0 = srv.rss_mb()
                    fz = asyncio.run(_fuzz(srv.url, fuzz_cases(args.fuzz), 4))
                    alive = httpx.get(srv.url + "/healthz", timeout=30).status_code == 200
                    r = httpx.post(srv.url + "/v1/predict", content=photos[0][1], timeout=120)
                    answers = r.status_code == 200 and len(r.json()["faces"]) == 1
                    totals: dict[str, int] = {}
                    for per in fz["statuses"].values():
                        for k, v in per.items():
                            totals[k] = totals.get(k, 0) + v
                    bad = {k: v for k, v in totals.items() if not k.isdigit() or int(k) >= 500}
                    fz.update(totals=totals, bad=bad, alive_after=alive,
                              answers_photo_after=answers, rss_mb_before=rss0,
                              rss_mb_after=srv.rss_mb())
                    report["fuzz"] = fz
                    print(f"[fuzz] {json.dumps(fz)}", flush=True)
                    ok = ok and not bad and alive and answers and srv.proc.poll() is None
            finally:
                srv.stop()

    # -- summary
    print()
    print("| server | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | "
          "faces/batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in report["load"].items():
        for r in rows:
            print(f"| {name} | {r['concurrency']} | {r['requests']} | {r['rps']:.1f} | "
                  f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
                  f"{r['faces_per_batch']:.1f} |")
    if "max-batch-1" in report["load"]:
        gains = {a["concurrency"]: a["rps"] / b["rps"] for a, b in
                 zip(report["load"]["batched"], report["load"]["max-batch-1"])}
        report["batching_gain"] = gains
        print("\nbatching gain (req/s batched / max-batch 1): "
              + ", ".join(f"{c} clients x{g:.2f}" for c, g in gains.items()))
    if "memory" in report:
        m = report["memory"]
        print(f"\nmemory: RSS {m['rss_mb_before']:.0f} MiB before, {m['rss_mb_after']:.0f} MiB "
              f"after {m['requests']} requests ({m['errors']} errors); samples "
              + " ".join(f"{s:.0f}" for s in m["rss_mb_samples"]))
    if "fuzz" in report:
        f = report["fuzz"]
        print(f"fuzz: {f['cases']} uploads in {f['wall_s']:.1f} s, statuses {f['totals']}; "
              f"5xx/transport errors {f['bad'] or 'none'}; alive after: {f['alive_after']}, "
              f"answers a photo: {f['answers_photo_after']}; RSS {f['rss_mb_before']:.0f} -> "
              f"{f['rss_mb_after']:.0f} MiB")
        for kind, per in f["statuses"].items():
            print(f"  {kind}: {per}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
