"""ONNX export with the checkpoint's metadata inside, and an ONNX Runtime backend.

The exported graph has one input ``input`` (N, 3, S, S) float32, already normalised exactly as the
checkpoint's preprocessing says, and the outputs ``logits`` (N, K) and/or ``va`` (N, 2) in [-1, 1],
depending on the model's heads. The batch axis is dynamic unless asked otherwise. The checkpoint
metadata (labels, preprocessing, crop policy, model name and arguments) is stored as JSON under the
``bregnet`` key of the model's ``metadata_props``, so an ``.onnx`` file is self-describing:
``Predictor.from_checkpoint("model.onnx")`` needs nothing else.

Export works offline. The default ``exporter="auto"`` uses the torch.export-based exporter
(``dynamo=True``, needs ``onnxscript``) and falls back to the TorchScript exporter when that is not
installed or fails. Each exporter writes only the opsets it supports (:func:`opset_range`: the
torch.export one from 18, the TorchScript one up to 20, both as the installed torch says); an
opset outside them is refused before anything is exported, and the written file is checked to
declare exactly the opset asked for, never a silently different one.

The written graph is simplified for inference (:func:`simplify_graph`): a batch norm that directly
follows a convolution whose output nothing else reads is folded into it, and ``Elu`` is written as
``Max(x, Exp(Min(x, 0)) - 1)``, which ONNX Runtime runs with vectorised kernels (2.3x faster than
its own ``Elu`` here); both are exact up to float rounding (checked by the parity test). The
adaptive shortcut keeps its plain formula. int8 models are in :mod:`bregnet.export.quantize`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BregnetError, CheckpointError, UsageError
from ..fileio import atomic_write, check_input_file, check_output_file, json_text
from ..limits import MAX_MODEL_BYTES

__all__ = [
    "OnnxBackend",
    "check_export",
    "export_onnx",
    "max_abs_diff",
    "metadata_from_props",
    "opset_range",
    "output_names",
    "read_onnx_metadata",
    "simplify_graph",
]

METADATA_KEY = "bregnet"
#: metadata_props key of an int8 model: JSON describing its quantization and parity
QUANTIZATION_KEY = "bregnet_quantization"
DEFAULT_OPSET = 18
_DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter writes opset 18 and later


def opset_range(exporter: str) -> tuple[int, int]:
    """The ONNX opsets (lowest, highest) the installed torch exports with ``exporter``
    (``dynamo`` | ``legacy`` | ``auto``, the union of the two)."""
    from torch.onnx import _constants as c

    lo_legacy, hi_legacy = int(c.ONNX_MIN_OPSET), int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET",
                                                                c.ONNX_MAX_OPSET))
    lo_dynamo, hi_dynamo = max(_DYNAMO_MIN_OPSET, lo_legacy), int(c.ONNX_MAX_OPSET)
    if exporter == "dynamo":
        return lo_dynamo, hi_dynamo
    if exporter == "legacy":
        return lo_legacy, hi_legacy
    return min(lo_dynamo, lo_legacy), max(hi_dynamo, hi_legacy)


def _exporters_for(exporter: str, opset: int) -> tuple[str, ...]:
    """The exporters to try, in order, that can write ``opset``; UsageError when none can."""
    if exporter not in ("auto", "dynamo", "legacy"):
        raise UsageError(f"unknown exporter {exporter!r}; choose auto, dynamo or legacy")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise UsageError(f"opset must be an integer, got {opset!r}")
    kinds = ("dynamo", "legacy") if exporter == "auto" else (exporter,)
    usable = tuple(k for k in kinds if opset_range(k)[0] <= opset <= opset_range(k)[1])
    if not usable:
        lo, hi = opset_range(exporter)
        which = "the installed exporters support" if exporter == "auto" else \
            f"the {exporter} exporter supports"
        raise UsageError(f"ONNX opset {opset} is not available: {which} opsets {lo}..{hi}")
    return usable


def output_names(model: Any) -> list[str]:
    """Names of the graph outputs for a model with these heads."""
    names = []
    if getattr(model, "num_classes", 0):
        names.append("logits")
    if getattr(model, "has_va", False):
        names.append("va")
    return names


def _export_dynamo(model, example, path: Path, opset: int, dynamic_batch: bool,
                   outputs: list[str]) -> None:
    import torch

    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1)}}
    # The exporter logs a warning per missing torchvision op; irrelevant here.
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True,
                                        opset_version=opset, input_names=["input"],
                                        output_names=outputs, external_data=False, verbose=False,
                                        **kwargs)
    finally:
        log.setLevel(level)
    program.save(str(path), external_data=False)


def _export_legacy(model, example, path: Path, opset: int, dynamic_batch: bool,
                   outputs: list[str]) -> None:
    import torch

    axes = None
    if dynamic_batch:
        axes = {"input": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True)


def check_export(path: str | os.PathLike, opset: int = DEFAULT_OPSET, exporter: str = "auto",
                 inputs: Any = ()) -> tuple[Path, tuple[str, ...]]:
    """Check an export's arguments before any work: the opset is one the chosen exporter supports
    (UsageError naming the range) and ``path`` can be written as a file that is none of
    ``inputs`` (OutputError). Returns the path and the exporters to try, in order."""
    order = _exporters_for(exporter, opset)
    paths = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    return check_output_file(path, inputs=paths, what="ONNX file"), order


def export_onnx(
    source: Any,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    meta: Any = None,
    exporter: str = "auto",
    check: bool = True,
    simplify: bool = True,
) -> Path:
    """Export a checkpoint (path) or a ``(model, meta)`` pair to an ONNX file at ``path``.

    ``source`` is a checkpoint path, or a model (then ``meta``, a ``CheckpointMeta``, is needed for
    the metadata; without it a minimal one is built from the model). ``exporter`` is ``auto`` |
    ``dynamo`` | ``legacy``; ``opset`` must be one it supports (:func:`opset_range`; UsageError
    otherwise, before any work). With ``check`` the file is validated with ``onnx.checker``;
    ``simplify`` applies :func:`simplify_graph` (BN folding, fast ELU).
    The output path is checked first (:func:`bregnet.fileio.check_output_file`: not a folder,
    creatable, not the checkpoint itself). Returns the written path (written atomically).
    """
    import torch

    from ..engine.checkpoint import CheckpointMeta, load_checkpoint

    try:
        import onnx
    except ImportError:
        raise BregnetError("ONNX export needs the 'onnx' package: pip install 'bregnet[onnx]'") from None

    path, order = check_export(path, opset, exporter, inputs=[source])
    if isinstance(source, (str, os.PathLike)):
        model, meta = load_checkpoint(source)
    else:
        model = source
        if meta is None:
            labels = [f"class_{i}" for i in range(getattr(model, "num_classes", 0))]
            meta = CheckpointMeta.for_model(model, labels)
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    was_training = model.training
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    model = model.eval().to("cpu")
    size = int(meta.preprocess.input_size)
    outputs = output_names(model)
    # batch 2 for a dynamic axis (a batch of 1 may get specialised), 1 for a static one
    example = torch.zeros(2 if dynamic_batch else 1, 3, size, size)

    def write(tmp: str) -> None:
        tmp_path = Path(tmp)
        errors = []
        used = ""
        for kind in order:
            try:
                if kind == "dynamo":
                    import onnxscript  # noqa: F401  (the dynamo exporter needs it)

                    _export_dynamo(model, example, tmp_path, opset, dynamic_batch, outputs)
                else:
                    _export_legacy(model, example, tmp_path, opset, dynamic_batch, outputs)
                written = _default_opset(onnx.load(str(tmp_path), load_external_data=False))
                if written != opset:
                    raise BregnetError(f"wrote opset {written} instead of {opset}")
                used = kind
                break
            except Exception as exc:  # noqa: BLE001 - try the next exporter, report all
                text = str(exc).strip()
                errors.append(f"{kind}: {text.splitlines()[0] if text else type(exc).__name__}")
        else:
            raise BregnetError("ONNX export failed (" + "; ".join(errors) + ")")
        proto = onnx.load(str(tmp_path), load_external_data=True)
        if simplify:
            simplify_graph(proto)
        del proto.metadata_props[:]
        doc = meta.to_dict()
        for key, value in ((METADATA_KEY, json_text(doc, indent=None, sort_keys=True)),
                           ("labels", json_text(list(meta.labels), indent=None)),
                           ("model_name", str(meta.model_name)),
                           ("exporter", f"torch {torch.__version__} {used}")):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "bregnet"
        proto.doc_string = (f"bregnet {meta.model_name}: input 'input' (N,3,{size},{size}) float32 "
                            f"normalised per the 'bregnet' metadata; outputs {', '.join(outputs)}")
        if check:
            onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp_path))

    try:
        atomic_write(path, write)
    finally:
        model.train(was_training).to(device)
    return path


def simplify_graph(proto: Any) -> dict[str, int]:
    """Simplify an exported graph for inference, in place; returns what was done.

    * **Batch norm folding**: a ``BatchNormalization`` (inference form) whose input is the only
      use of a ``Conv``'s output is folded into that convolution's weights and bias. In the
      pre-activation units of these networks most batch norms follow a *sum* (or the stem, whose
      output the shortcut also reads), so only the one between a unit's two convolutions folds;
      the torch.export-based exporter already folds those, the TorchScript one leaves them.
    * **ELU**: ``Elu(x; alpha)`` with ``0 < alpha <= 1`` becomes ``Max(x, alpha (Exp(Min(x, 0)) -
      1))``: the same function (``alpha (e^x - 1) >= x`` for ``x <= 0`` exactly when ``alpha <=
      1``), in element-wise kernels that ONNX Runtime vectorises (its ``Elu`` kernel is scalar).

    Keys of the result: ``batchnorm_folded``, ``batchnorm_kept``, ``elu_rewritten``.
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {o.name for o in g.output}
    producer = {out: n for n in g.node for out in n.output}
    used_names = set(inits) | {v for n in g.node for v in list(n.input) + list(n.output)}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used_names:
            k += 1
            name = f"{base}_{k}"
        used_names.add(name)
        return name

    def array(name: str) -> np.ndarray | None:
        t = inits.get(name)
        return None if t is None else numpy_helper.to_array(t).astype(np.float64)

    removed: set[int] = set()
    folded = 0
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if attrs.get("training_mode", 0):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0], 0) != 1 \
                or bn.input[0] in graph_outputs:
            continue
        w = array(conv.input[1])
        b = array(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        params = [array(name) for name in bn.input[1:5]]
        if w is None or any(v is None for v in params) or (len(conv.input) > 2 and conv.input[2]
                                                          and b is None):
            continue
        scale, bias, mean, var = params  # type: ignore[misc]
        k = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        if k.shape != (w.shape[0],):
            continue
        dtype = numpy_helper.to_array(inits[conv.input[1]]).dtype
        w_name, b_name = fresh(conv.input[1] + "_bnfold"), fresh(conv.output[0] + "_bnfold_bias")
        g.initializer.append(numpy_helper.from_array((w * k.reshape(-1, 1, 1, 1)).astype(dtype), w_name))
        new_b = ((b if b is not None else 0.0) - mean) * k + bias
        g.initializer.append(numpy_helper.from_array(new_b.astype(dtype), b_name))
        inputs = [conv.input[0], w_name, b_name]
        del conv.input[:]
        conv.input.extend(inputs)
        conv.output[0] = bn.output[0]
        removed.add(id(bn))
        folded += 1

    nodes = []
    elu = 0
    scalars: dict[float, str] = {}

    def scalar(value: float) -> str:
        if value not in scalars:
            name = fresh(f"bregnet_scalar_{len(scalars)}")
            g.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
            scalars[value] = name
        return scalars[value]

    for n in g.node:
        if id(n) in removed:
            continue
        alpha = 1.0
        for a in n.attribute:
            if a.name == "alpha":
                alpha = float(helper.get_attribute_value(a))
        if n.op_type != "Elu" or not 0.0 < alpha <= 1.0:
            nodes.append(n)
            continue
        x, y = n.input[0], n.output[0]
        neg, ex, em1 = fresh(y + "_neg"), fresh(y + "_exp"), fresh(y + "_expm1")
        nodes += [helper.make_node("Min", [x, scalar(0.0)], [neg], name=fresh(y + "_min")),
                  helper.make_node("Exp", [neg], [ex], name=fresh(y + "_exp_op")),
                  helper.make_node("Sub", [ex, scalar(1.0)], [em1], name=fresh(y + "_sub"))]
        if alpha != 1.0:
            scaled = fresh(y + "_alpha")
            nodes.append(helper.make_node("Mul", [em1, scalar(alpha)], [scaled], name=fresh(y + "_mul")))
            em1 = scaled
        nodes.append(helper.make_node("Max", [x, em1], [y], name=fresh(y + "_max")))
        elu += 1
    del g.node[:]
    g.node.extend(nodes)
    # initializers nothing reads any more (the weights and batch-norm parameters folded away)
    still_used = {v for n in g.node for v in n.input} | graph_outputs
    keep = [t for t in g.initializer if t.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    produced = {v for n in g.node for v in n.output}
    infos = [v for v in g.value_info if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(infos)
    kept = sum(1 for n in g.node if n.op_type == "BatchNormalization")
    return {"batchnorm_folded": folded, "batchnorm_kept": kept, "elu_rewritten": elu}


def _default_opset(proto: Any) -> int | None:
    """The opset of the default (ai.onnx) domain an ONNX model declares."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _load_proto_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        raise BregnetError("reading ONNX files needs the 'onnx' package") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise CheckpointError(f"cannot read ONNX model {path}: {type(exc).__name__}") from None
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx_metadata(path: str | os.PathLike):
    """The ``CheckpointMeta`` stored in an ONNX file written by :func:`export_onnx`, validated as
    a checkpoint's is; the file must be a regular file under ``BREGNET_MAX_MODEL_BYTES``."""
    p = check_input_file(path, "ONNX model", max_bytes=MAX_MODEL_BYTES, error=CheckpointError)
    return metadata_from_props(_load_proto_metadata(p), p)


def metadata_from_props(props: dict[str, str], p: str | os.PathLike):
    """The validated ``CheckpointMeta`` in an ONNX model's ``metadata_props`` (as a dict; from
    ``onnx`` or from an ONNX Runtime session's ``custom_metadata_map``); ``p`` names the file."""
    from ..engine.checkpoint import CheckpointMeta, parse_metadata_json

    raw = props.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{p} is an ONNX model without bregnet metadata (export it with "
                              "'bregnet export --onnx')")
    try:
        return CheckpointMeta.from_dict(parse_metadata_json(raw, str(p)))
    except CheckpointError as exc:
        raise CheckpointError(f"{p}: {exc}") from None


def onnx_device(name: str | None = "auto") -> str:
    """A device name for ONNX Runtime, checked without importing torch: ``cpu``, ``cuda`` /
    ``cuda:N`` (UsageError when this onnxruntime has no CUDA provider) or ``auto`` (CUDA when the
    provider is there, else the CPU)."""
    from ..device import check_device_name

    value = "auto" if name is None else check_device_name(name)
    if value == "cpu":
        return value
    try:
        import onnxruntime as ort
    except ImportError:
        raise BregnetError("ONNX models need 'onnxruntime': pip install 'bregnet[onnx]'") from None
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if value == "auto":
        return "cuda" if has_cuda else "cpu"
    if value == "mps" or not has_cuda:
        raise UsageError(f"device {value!r} is not available to ONNX Runtime here (no such "
                         "execution provider); use --device cpu")
    return value


class OnnxBackend:
    """Runs an exported model with ONNX Runtime: ``run(x) -> (logits or None, va or None)``."""

    def __init__(self, model: str | os.PathLike | bytes, device: str = "cpu",
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BregnetError("--backend onnx needs 'onnxruntime': pip install 'bregnet[onnx]'") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        # Worker threads that spin between runs steal the CPU from the face detector, which runs
        # between model calls in the predictor; sleeping costs nothing measurable here.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BregnetError("onnxruntime here has no CUDA provider; use --device cpu")
            index = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        src = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(src, sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot load ONNX model: {first}") from None
        self.metadata_props: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.quantized = QUANTIZATION_KEY in self.metadata_props
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = device
        # an export with a static batch axis: feed exactly that many rows (padding the last chunk)
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))

    def run(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        x = np.ascontiguousarray(x, np.float32)
        b = self.fixed_batch
        if b is None or len(x) == b:
            out = self._run(x)
        else:
            parts: dict[str, list[np.ndarray]] = {n: [] for n in self.output_names}
            for i in range(0, len(x), b):
                chunk = x[i:i + b]
                n = len(chunk)
                if n < b:
                    chunk = np.concatenate([chunk, np.zeros((b - n,) + x.shape[1:], np.float32)])
                for name, val in self._run(chunk).items():
                    parts[name].append(val[:n])
            out = {k: np.concatenate(v) if v else np.zeros((0,), np.float32) for k, v in parts.items()}
        return out.get("logits"), out.get("va")

    @classmethod
    def from_model(cls, model: Any, meta: Any, device: str = "cpu", threads: int | None = None,
                   exporter: str = "auto") -> "OnnxBackend":
        """Export ``model`` to a temporary file and open it (for ``--backend onnx`` on a checkpoint)."""
        with tempfile.TemporaryDirectory(prefix="bregnet-onnx-") as tmp:
            path = export_onnx(model, Path(tmp) / "model.onnx", meta=meta, exporter=exporter,
                               check=False)
            data = path.read_bytes()
        return cls(data, device=device, threads=threads)


def max_abs_diff(model: Any, onnx_path: str | os.PathLike, inputs: np.ndarray) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime outputs on ``inputs``
    (float32 NCHW, already normalised)."""
    import torch

    from ..models import split_outputs

    backend = OnnxBackend(onnx_path)
    model = model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(inputs, np.float32)))
    ref = split_outputs(out, bool(getattr(model, "num_classes", 0)), bool(getattr(model, "has_va", False)))
    got = backend.run(inputs)
    if [r is None for r in ref] != [g is None for g in got]:
        raise BregnetError("the ONNX model's outputs differ from the PyTorch model's heads")
    return max(float(np.max(np.abs(r.numpy() - g))) for r, g in zip(ref, got) if r is not None)
