"""Streaming ONNX writing: initializers go straight to one external-data file as they are made.

A 2B model never exists in memory as one protobuf: each tensor is written, then dropped, and the
graph keeps only a TensorProto that points into the data file (offset, length).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGN = 4096  # page-aligned offsets for large tensors let onnxruntime map the data file instead of copying it
SMALL_ALIGN = 64
SMALL = 1 << 20


class ExternalDataWriter:
    def __init__(self, folder: Path, filename: str):
        self.folder, self.filename = Path(folder), filename
        self._f = open(self.folder / filename, "wb")
        self.nbytes = 0

    def add(self, name: str, array: np.ndarray) -> TensorProto:
        array = np.ascontiguousarray(array)
        pad = (-self._f.tell()) % (ALIGN if array.nbytes >= SMALL else SMALL_ALIGN)
        if pad:
            self._f.write(b"\0" * pad)
        offset = self._f.tell()
        self._f.write(array.tobytes())
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.filename), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.nbytes += array.nbytes
        return t

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


class GraphBuilder:
    """Collects nodes and initializers; small constants stay inline, weights go to the data file."""

    INLINE_LIMIT = 1024  # bytes

    def __init__(self, writer: ExternalDataWriter):
        self.writer = writer
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._consts: dict[tuple, str] = {}

    def weight(self, name: str, array: np.ndarray) -> str:
        if array.nbytes <= self.INLINE_LIMIT:
            self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        else:
            self.initializers.append(self.writer.add(name, array))
        return name

    def const(self, values, dtype=np.int64) -> str:
        arr = np.asarray(values, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = f"/model/constants/{arr.dtype.name}/{'_'.join(map(str, arr.ravel()[:4]))}/{len(self._consts)}"
            self._consts[key] = self.weight(name, arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], path: str, *, outputs: int | list[str] = 1,
           domain: str = "", **attrs) -> list[str]:
        """Emit one node named by its path; returns output names (path/output_i)."""
        if isinstance(outputs, int):
            outputs = [f"{path}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=path, domain=domain or None, **attrs))
        return outputs

    def op1(self, op_type: str, inputs: list[str], path: str, **kw) -> str:
        return self.op(op_type, inputs, path, **kw)[0]
