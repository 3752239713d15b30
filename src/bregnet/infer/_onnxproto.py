"""A few ONNX messages written as protocol-buffer bytes, without importing the ``onnx`` package.

Why not ``onnx.helper``: importing ``onnx`` takes 0.7-1.0 s on the 2-core machines (almost all of
it in ``ml_dtypes``, measured with ``python -X importtime``), and the detector graph of
:mod:`bregnet.infer.yunet` is built at every start of ``bregnet predict``, whose start-up counts in
the frames/s of a video. ONNX Runtime only needs the serialized ``ModelProto``. The messages and
field numbers are those of ``onnx/onnx.proto`` (proto2, stable since IR version 3); only what a
plain inference graph needs is here: tensors with raw data, nodes with int / ints / float
attributes, value infos with symbolic dimensions. ``tests/test_yunet.py`` parses the bytes with
``onnx`` itself and runs its checker.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

import numpy as np

__all__ = ["attr", "model", "node", "tensor", "value_info"]

# TensorProto.DataType
_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int64): 7}
# AttributeProto.AttributeType
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1          # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(int(value))


def _len(field: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _float(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", float(value))


def tensor(name: str, array: np.ndarray) -> bytes:
    """A ``TensorProto`` (an initializer) holding ``array`` as raw little-endian data."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _DTYPES:
        raise ValueError(f"no ONNX type for {array.dtype}")
    dims = b"".join(_int(1, d) for d in array.shape)
    return (dims + _int(2, _DTYPES[array.dtype]) + _len(8, name)
            + _len(9, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()))


def attr(name: str, value: int | float | Sequence[int]) -> bytes:
    """An ``AttributeProto``: an int, a float or a list of ints."""
    if isinstance(value, bool):
        raise TypeError("boolean attribute")
    if isinstance(value, int):
        return _len(1, name) + _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, float):
        return _len(1, name) + _float(2, value) + _int(20, _ATTR_FLOAT)
    return _len(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)


def node(op_type: str, inputs: Iterable[str], outputs: Iterable[str], name: str = "",
         **attributes: int | float | Sequence[int]) -> bytes:
    """A ``NodeProto`` of the default domain; an empty input name is an omitted optional input."""
    out = b"".join(_len(1, i) for i in inputs) + b"".join(_len(2, o) for o in outputs)
    if name:
        out += _len(3, name)
    out += _len(4, op_type)
    for key, value in attributes.items():
        out += _len(5, attr(key, value))
    return out


def value_info(name: str, elem_type: np.dtype | type, shape: Sequence[int | str]) -> bytes:
    """A ``ValueInfoProto`` for a tensor; a ``str`` dimension is symbolic."""
    dims = b"".join(_len(1, _len(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, _DTYPES[np.dtype(elem_type)]) + _len(2, dims)
    return _len(1, name) + _len(2, _len(1, tensor_type))


def model(nodes: Sequence[bytes], initializers: Sequence[bytes], inputs: Sequence[bytes],
          outputs: Sequence[bytes], name: str = "graph", opset: int = 17, ir_version: int = 8,
          producer: str = "bregnet") -> bytes:
    """A serialized ``ModelProto`` holding one graph (default-domain operators of ``opset``)."""
    graph = (b"".join(_len(1, n) for n in nodes) + _len(2, name)
             + b"".join(_len(5, t) for t in initializers)
             + b"".join(_len(11, v) for v in inputs) + b"".join(_len(12, v) for v in outputs))
    opset_id = _len(1, "") + _int(2, opset)
    return _int(1, ir_version) + _len(2, producer) + _len(7, graph) + _len(8, opset_id)
