"""Converter of the official BReG-NeXt TensorFlow checkpoint (``bregnet convert-tf``).

Without TensorFlow: a pure-Python tensor-bundle writer below makes small and full-size bundles
in the exact on-disk format; the real index of the official checkpoint (../shared/reference/)
checks names, shapes and the checksum convention. With the ``tf-test`` extra installed, TF's own
saver writes the bundle and TF computes the reference forward pass.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bregnet.cli import main
from bregnet.engine.checkpoint import load_checkpoint, read_metadata
from bregnet.errors import CheckpointError
from bregnet.export.convert_tf import (
    AFFECTNET_LABELS,
    convert_tf_checkpoint,
    is_skipped_variable,
    load_tf_bundle_into_model,
    official_variable_map,
)
from bregnet.export.tf_bundle import (
    TensorBundle,
    TFBundleError,
    _snappy_decompress,
    crc32c,
    mask_crc32c,
    read_index,
    unmask_crc32c,
)
from bregnet.models import create_model
from bregnet.preprocess import PAPER_MEAN

REAL_INDEX = Path(__file__).resolve().parents[2] / "shared/reference/bregnext50_affectnet_checkpoints.index"
DATA_SUFFIX = ".data-00000-of-00001"
TF_EPS = 1e-5  # tflearn.batch_normalization's epsilon

# --------------------------------------------------------------------------------------------
# A minimal tensor-bundle writer (LevelDB table + BundleEntryProto), independent of the reader.
# --------------------------------------------------------------------------------------------

_DT = {np.dtype("float32"): 1, np.dtype("int32"): 3, np.dtype("bool"): 10, np.dtype("int64"): 9}
_MAGIC = 0xDB4775248B80FB57


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint((number << 3) | wire) + payload


def _entry_proto(arr: np.ndarray, offset: int, raw: bytes) -> bytes:
    dims = b"".join(_field(2, 2, _varint(len(d)) + d)
                    for d in (_field(1, 0, _varint(s)) for s in arr.shape))
    out = _field(1, 0, _varint(_DT[arr.dtype])) + _field(2, 2, _varint(len(dims)) + dims)
    if offset:
        out += _field(4, 0, _varint(offset))
    out += _field(5, 0, _varint(len(raw)))
    out += _field(6, 5, struct.pack("<I", mask_crc32c(crc32c(raw))))
    return out


def _header_proto(num_shards: int = 1) -> bytes:
    version = _field(1, 0, _varint(1))
    return _field(1, 0, _varint(num_shards)) + _field(3, 2, _varint(len(version)) + version)


def _snappy_literal(data: bytes) -> bytes:
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        out += bytes([61 << 2]) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)


def _block(items: list[tuple[bytes, bytes]], restart_interval: int = 4) -> bytes:
    out = bytearray()
    restarts: list[int] = []
    last = b""
    for i, (k, v) in enumerate(items):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = len(os.path.commonprefix([last, k]))
        out += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        last = k
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def write_table(path: Path, items: list[tuple[bytes, bytes]], per_block: int = 50,
                compress: bool = False) -> None:
    data = bytearray()

    def emit(contents: bytes) -> bytes:
        kind = 0
        if compress:
            contents, kind = _snappy_literal(contents), 1
        offset = len(data)
        data.extend(contents + bytes([kind]))
        data.extend(struct.pack("<I", mask_crc32c(crc32c(contents + bytes([kind])))))
        return _varint(offset) + _varint(len(contents))

    index = []
    for i in range(0, len(items), per_block):
        chunk = items[i:i + per_block]
        index.append((chunk[-1][0], emit(_block(chunk))))
    meta = emit(_block([]))
    idx = emit(_block(index, 1))
    footer = meta + idx
    data.extend(footer + b"\0" * (40 - len(footer)) + struct.pack("<Q", _MAGIC))
    path.write_bytes(bytes(data))


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], **kw) -> None:
    """Write ``tensors`` as a TF V2 bundle (one shard) at ``prefix``."""
    shard = bytearray()
    items = [(b"", _header_proto())]
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        items.append((name.encode(), _entry_proto(arr, len(shard), raw)))
        shard += raw
    Path(f"{prefix}{DATA_SUFFIX}").write_bytes(bytes(shard))
    write_table(Path(f"{prefix}.index"), items, **kw)


def random_official_variables(seed: int = 0, num_classes: int = 8) -> dict[str, np.ndarray]:
    """Random, non-trivial values under the official tflearn names (plus optimiser clutter)."""
    rng = np.random.default_rng(seed)
    model = create_model("bregnext50", num_classes=num_classes, tf_same_padding=True)
    out: dict[str, np.ndarray] = {}
    for tf_name, (key, layout) in official_variable_map(model).items():
        shape = tuple(model.state_dict()[key].shape)
        if layout == "conv":
            o, i, h, w = shape
            v = rng.normal(0, 0.7 * math.sqrt(2.0 / (i * h * w)), (h, w, i, o))
        elif layout == "fc":
            v = rng.normal(0, 0.2, shape[::-1])
        elif tf_name.endswith("/a"):
            v = rng.uniform(0.3, 2.0, ())
        elif tf_name.endswith("/c"):
            v = rng.uniform(-1.5, 1.5, ())
        elif tf_name.endswith("moving_variance"):
            v = rng.uniform(0.5, 2.0, shape)
        elif tf_name.endswith("gamma"):
            v = rng.uniform(0.7, 1.3, shape)
        else:  # beta, moving_mean, biases
            v = rng.normal(0, 0.1, shape)
        out[tf_name] = np.asarray(v, np.float32)
    for name in ("Conv2D/W", "FullyConnected/b"):
        out[name + "/Adam"] = np.zeros_like(out[name])
        out[name + "/Adam_1"] = np.ones_like(out[name])
    out["optimizer/beta1_power"] = np.asarray(0.9, np.float32)
    out["optimizer/Variable"] = np.asarray(1234, np.int32)
    out["is_training"] = np.asarray(False)
    return out


def official_forward(v: dict[str, np.ndarray], x_nhwc: np.ndarray) -> np.ndarray:
    """The official layer sequence straight from the TF variables, in NHWC with TF 'SAME'."""
    def conv(x, scope, stride=1):
        w = torch.from_numpy(v[f"{scope}/W"]).permute(3, 2, 0, 1)
        n, c, h, wd = x.shape
        pads = []
        for size in (wd, h):  # F.pad order: last dim first
            total = max((math.ceil(size / stride) - 1) * stride + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, torch.from_numpy(v[f"{scope}/b"]), stride)

    def bn(x, scope):
        g = lambda k: torch.from_numpy(v[f"{scope}/{k}"]).view(1, -1, 1, 1)  # noqa: E731
        return (x - g("moving_mean")) / torch.sqrt(g("moving_variance") + TF_EPS) * g("gamma") + g("beta")

    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    net = conv(x, "Conv2D")
    blocks = [(7, 32, False), (1, 64, True), (8, 64, False), (1, 128, True), (7, 128, False)]
    for b, (units, width, down) in enumerate(blocks):
        scope = "ResidualBlock" + (f"_{b}" if b else "")
        for i in range(units):
            sfx = lambda j: f"_{j}" if j else ""  # noqa: E731
            stride = 2 if down else 1
            identity = net
            r = F.elu(bn(net, f"{scope}/BatchNormalization{sfx(2 * i)}"))
            r = conv(r, f"{scope}/Conv2D{sfx(2 * i)}", stride)
            r = F.elu(bn(r, f"{scope}/BatchNormalization{sfx(2 * i + 1)}"))
            r = conv(r, f"{scope}/Conv2D{sfx(2 * i + 1)}")
            a = float(v[f"{scope}/shortcut_mod{sfx(i)}/a"])
            c = float(v[f"{scope}/shortcut_mod{sfx(i)}/c"])
            s = math.sqrt(c * c + 1)
            identity = torch.atan(a * identity / s) / (a * s)
            if stride > 1:
                identity = F.avg_pool2d(identity, 2, 2)
            grow = width - identity.shape[1]
            if grow:
                identity = F.pad(identity, (0, 0, 0, 0, grow // 2, grow // 2))
            net = r + identity
    net = F.elu(bn(net, "BatchNormalization")).mean(dim=(2, 3))
    return (net @ torch.from_numpy(v["FullyConnected/W"]) + torch.from_numpy(v["FullyConnected/b"])).numpy()


def random_input(n: int = 2, seed: int = 1, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, size, size, 3)) - np.asarray(PAPER_MEAN)).astype(np.float32)


@pytest.fixture(scope="module")
def official_bundle(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("tfckpt") / "checkpoints"
    variables = random_official_variables()
    write_bundle(prefix, variables)
    return prefix, variables


def _small_bundle(tmp_path: Path, **kw) -> Path:
    prefix = tmp_path / "small"
    write_bundle(prefix, {"x/W": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                          "y": np.asarray(7, np.int32), "z/flag": np.asarray([True, False])}, **kw)
    return prefix


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def _crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_reference():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 70_001, dtype=np.uint8).tobytes()
    assert crc32c(data) == _crc_bitwise(data)  # the vectorised (chunked) path
    assert crc32c(data[1000:], crc32c(data[:1000])) == crc32c(data)
    for v in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert unmask_crc32c(mask_crc32c(v)) == v


@pytest.mark.parametrize("kw", [{}, {"per_block": 1}, {"compress": True}])
def test_reader_reads_written_bundle(tmp_path, kw):
    prefix = _small_bundle(tmp_path, **kw)
    for spec in (prefix, f"{prefix}.index", f"{prefix}{DATA_SUFFIX}"):
        bundle = TensorBundle(spec)
        assert bundle.names() == ["x/W", "y", "z/flag"]
        np.testing.assert_array_equal(bundle.read("x/W"), np.arange(24, dtype=np.float32).reshape(2, 3, 4))
        assert bundle.read("y").dtype == np.int32 and int(bundle.read("y")) == 7
        assert bundle.read("z/flag").tolist() == [True, False]
    assert bundle.header.num_shards == 1 and bundle.entries["x/W"].shape == (2, 3, 4)
    assert TensorBundle(tmp_path).prefix == prefix  # a folder with one bundle


def test_snappy_copies():
    # literal "abcd", then a 1-byte-offset copy (len 8, offset 4) and a 2-byte-offset copy
    stream = _varint(15) + bytes([3 << 2]) + b"abcd" + bytes([(4 << 2) | 1, 4]) + bytes([(2 << 2) | 2]) + struct.pack("<H", 12)
    assert _snappy_decompress(stream) == b"abcdabcdabcdabc"


def test_truncated_and_corrupt_index(tmp_path):
    prefix = _small_bundle(tmp_path)
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    index.write_bytes(data[:-10])
    with pytest.raises(TFBundleError, match="corrupt or truncated index"):
        TensorBundle(prefix)
    corrupt = bytearray(data)
    corrupt[5] ^= 0xFF  # inside the data block: its block checksum fails
    index.write_bytes(bytes(corrupt))
    with pytest.raises(TFBundleError, match="checksum"):
        read_index(index)
    with pytest.raises(TFBundleError, match="index file not found"):
        TensorBundle(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------
# The real index of the official checkpoint
# --------------------------------------------------------------------------------------------

needs_real_index = pytest.mark.skipif(not REAL_INDEX.is_file(), reason=f"{REAL_INDEX} absent")


@needs_real_index
def test_real_index_maps_onto_bregnext50():
    header, entries = read_index(REAL_INDEX)
    assert header.num_shards == 1 and header.endianness == "little"
    assert len(entries) == 840
    kept = sorted(n for n in entries if not is_skipped_variable(n))
    assert "ResidualBlock_2/shortcut_mod_7/a" in kept and "FullyConnected/W" in kept
    assert all("Adam" not in n and "optimizer" not in n for n in kept)
    model = create_model("bregnext50", num_classes=8, tf_same_padding=True)
    mapping = official_variable_map(model)
    assert sorted(mapping) == kept  # every non-optimiser variable maps, and nothing is missing
    state = model.state_dict()
    for name, (key, layout) in mapping.items():
        shape = entries[name].shape
        if layout == "conv":
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif layout == "fc":
            shape = shape[::-1]
        assert tuple(state[key].shape) == tuple(shape), name
        assert entries[name].dtype == "float32"
    covered = {k for k, _ in mapping.values()}
    assert covered == {k for k in state if not k.endswith("num_batches_tracked")}
    n_params = sum(int(np.prod(entries[n].shape)) for n in kept
                   if not n.endswith(("moving_mean", "moving_variance")))
    assert n_params == 3_072_696
    # The stored CRCs follow TF's masked CRC32C: the never-updated moving statistics are 0 and 1.
    mm = entries["ResidualBlock/BatchNormalization/moving_mean"]
    assert unmask_crc32c(mm.crc32c) == crc32c(np.zeros(32, np.float32).tobytes())
    mv = entries["ResidualBlock_4/BatchNormalization_9/moving_variance"]
    assert unmask_crc32c(mv.crc32c) == crc32c(np.ones(128, np.float32).tobytes())


@needs_real_index
def test_real_index_without_data_shard(tmp_path):
    (tmp_path / "checkpoints.index").symlink_to(REAL_INDEX)
    with pytest.raises(TFBundleError, match=r"data shard missing: .*checkpoints\.data-00000-of-00001"):
        convert_tf_checkpoint(tmp_path / "checkpoints", tmp_path / "out")
    assert main(["convert-tf", str(tmp_path / "checkpoints.index"), "--list"]) == 0


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def test_convert_matches_official_forward(official_bundle, tmp_path):
    prefix, variables = official_bundle
    path, report = convert_tf_checkpoint(prefix, tmp_path / "out")
    assert path == tmp_path / "out" / "model.safetensors"
    assert report.mapped == len(official_variable_map(create_model("bregnext50"))) == 344
    assert len(report.skipped) == 7
    model, meta = load_checkpoint(path)
    assert meta.labels == AFFECTNET_LABELS and meta.model_args["tf_same_padding"] is True
    assert meta.preprocess.mean == PAPER_MEAN and meta.preprocess.input_size == 64
    assert meta.extra["converted_from"]["repository"] == "behzadhsni/BReG-NeXt"
    assert all(m.eps == TF_EPS for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = random_input(size=32)  # fully convolutional: 32x32 checks the same padding rules, 4x faster
    want = official_forward(variables, x)
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert np.abs(want).max() > 0.1  # a non-trivial output
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_cli_convert(official_bundle, tmp_path, capsys):
    prefix, _ = official_bundle
    out = tmp_path / "official.safetensors"
    assert main(["convert-tf", f"{prefix}.index", "--out", str(out)]) == 0
    assert "converted 344 variables" in capsys.readouterr().out
    assert read_metadata(out).labels == AFFECTNET_LABELS
    assert main(["convert-tf", str(prefix), "--out", str(tmp_path / "x"), "--labels", "a,b"]) == 2
    assert "2 label names" in capsys.readouterr().err


def _copy_bundle(src: Path, dst: Path) -> Path:
    for suffix in (".index", DATA_SUFFIX):
        Path(f"{dst}{suffix}").write_bytes(Path(f"{src}{suffix}").read_bytes())
    return dst


def test_checksum_failure(official_bundle, tmp_path, capsys):
    prefix = _copy_bundle(official_bundle[0], tmp_path / "ckpt")
    entry = TensorBundle(prefix).entries["ResidualBlock_2/Conv2D_3/W"]
    shard = Path(f"{prefix}{DATA_SUFFIX}")
    data = bytearray(shard.read_bytes())
    data[entry.offset + 1000] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(TFBundleError, match=r"checksum failure .* ResidualBlock_2/Conv2D_3/W"):
        convert_tf_checkpoint(prefix, tmp_path / "out")
    assert main(["convert-tf", str(prefix), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bregnet convert-tf: error: checksum failure") and "\n" not in err
    assert not (tmp_path / "out" / "model.safetensors").exists()
    model, _ = load_tf_bundle_into_model(prefix, verify=False)  # can be forced
    assert model.num_classes == 8


def test_missing_shard(official_bundle, tmp_path, capsys):
    prefix = tmp_path / "ckpt"
    Path(f"{prefix}.index").write_bytes(Path(f"{official_bundle[0]}.index").read_bytes())
    assert main(["convert-tf", str(prefix), "--out", str(tmp_path / "out")]) == 2
    assert "data shard missing" in capsys.readouterr().err


def test_shape_mismatch(tmp_path):
    variables = random_official_variables(seed=3)
    variables["ResidualBlock_1/Conv2D/W"] = np.zeros((3, 3, 32, 48), np.float32)
    write_bundle(tmp_path / "ckpt", variables)
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*'ResidualBlock_1/Conv2D/W' has shape \[3, 3, 32, 48\] "
                       r"but bregnext50's stages\.1\.0\.conv1\.weight needs \[3, 3, 32, 64\]$"):
        convert_tf_checkpoint(tmp_path / "ckpt", tmp_path / "out")


def test_other_network(tmp_path):
    write_bundle(tmp_path / "resnet", {
        "conv1/kernel": np.zeros((3, 3, 3, 16), np.float32), "dense/kernel": np.zeros((16, 10), np.float32),
        "FullyConnected/W": np.zeros((16, 10), np.float32)})
    with pytest.raises(TFBundleError, match=r"not a BReG-NeXt-50 checkpoint.*expected variables missing"):
        convert_tf_checkpoint(tmp_path / "resnet", tmp_path / "out", labels=list("abcdefghij"))
    write_bundle(tmp_path / "other", {"dense/kernel": np.zeros((16, 10), np.float32)})
    with pytest.raises(TFBundleError, match="no 2-D 'FullyConnected/W'"):
        convert_tf_checkpoint(tmp_path / "other", tmp_path / "out")
    variables = random_official_variables(seed=4)
    variables["ResidualBlock_5/Conv2D/W"] = np.zeros((3, 3, 128, 128), np.float32)
    write_bundle(tmp_path / "deeper", variables)
    with pytest.raises(TFBundleError, match=r"1 variables that do not map \('ResidualBlock_5/Conv2D/W'\)"):
        convert_tf_checkpoint(tmp_path / "deeper", tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Against TensorFlow itself (pip install -e '.[test,tf-test]')
# --------------------------------------------------------------------------------------------


def _tf_forward(tf, v, x):
    """The official network built from TF ops, as codes/BReG-NeXt.py computes it at inference."""
    def conv(net, scope, stride=1):
        out = tf.nn.conv2d(net, v[f"{scope}/W"], strides=[1, stride, stride, 1], padding="SAME")
        return tf.nn.bias_add(out, v[f"{scope}/b"])

    def bn(net, scope):
        return tf.nn.batch_normalization(net, v[f"{scope}/moving_mean"], v[f"{scope}/moving_variance"],
                                         v[f"{scope}/beta"], v[f"{scope}/gamma"], TF_EPS)

    net = conv(x, "Conv2D")
    in_ch = 32
    for b, (units, width, down) in enumerate([(7, 32, False), (1, 64, True), (8, 64, False),
                                              (1, 128, True), (7, 128, False)]):
        scope = "ResidualBlock" + (f"_{b}" if b else "")
        for i in range(units):
            sfx = lambda j: f"_{j}" if j else ""  # noqa: E731
            stride = 2 if down else 1
            identity = net
            r = tf.nn.elu(bn(net, f"{scope}/BatchNormalization{sfx(2 * i)}"))
            r = conv(r, f"{scope}/Conv2D{sfx(2 * i)}", stride)
            r = tf.nn.elu(bn(r, f"{scope}/BatchNormalization{sfx(2 * i + 1)}"))
            r = conv(r, f"{scope}/Conv2D{sfx(2 * i + 1)}")
            a, c = v[f"{scope}/shortcut_mod{sfx(i)}/a"], v[f"{scope}/shortcut_mod{sfx(i)}/c"]
            root = tf.sqrt(tf.add(tf.pow(c, 2), 1))
            identity = tf.math.divide(tf.atan(tf.math.divide(tf.multiply(a, identity), root)),
                                      tf.multiply(a, root))
            if stride > 1:
                identity = tf.nn.avg_pool2d(identity, 2, 2, "SAME")
            if in_ch != width:
                ch = (width - in_ch) // 2
                identity = tf.pad(identity, [[0, 0], [0, 0], [0, 0], [ch, ch]])
                in_ch = width
            net = r + identity
    net = tf.reduce_mean(tf.nn.elu(bn(net, "BatchNormalization")), axis=[1, 2])
    return tf.matmul(net, v["FullyConnected/W"]) + v["FullyConnected/b"]


def test_matches_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    values = random_official_variables(seed=5)
    x = random_input(n=2, seed=6)
    prefix = tmp_path / "tf" / "checkpoints"
    graph = tf.Graph()
    with graph.as_default():
        tf_vars = {name: tf.compat.v1.Variable(val, name=name.replace("/", "__"))
                   for name, val in values.items()}
        logits = _tf_forward(tf, tf_vars, tf.constant(x))
        saver = tf.compat.v1.train.Saver(var_list=tf_vars, write_version=tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            want = sess.run(logits)
            saved = saver.save(sess, str(prefix), write_meta_graph=False)
    assert Path(f"{saved}.index").is_file() and Path(f"{saved}{DATA_SUFFIX}").is_file()
    listed = dict(tf.train.list_variables(saved))
    bundle = TensorBundle(saved)
    assert {n: list(e.shape) for n, e in bundle.entries.items()} == {n: list(s) for n, s in listed.items()}
    np.testing.assert_array_equal(bundle.read("ResidualBlock_3/Conv2D/W"), values["ResidualBlock_3/Conv2D/W"])

    path, _ = convert_tf_checkpoint(saved, tmp_path / "out")
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    diff = float(np.abs(got - want).max())
    print(f"max |torch - tensorflow| = {diff:.3g} (logit scale {np.abs(want).max():.3g})")
    assert np.abs(want).max() > 0.1
    assert diff < 1e-4
