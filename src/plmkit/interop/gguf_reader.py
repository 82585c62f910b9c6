"""A minimal reader of the GGUF container (llama.cpp's model file): metadata as Python values, tensors as arrays.

`gguf.GGUFReader` builds a numpy view for every part of every metadata value, which takes seconds for a 49k-token
vocabulary; this reads the same layout with `struct` in a fraction of that. Layout (GGUF v2/v3, little-endian):
magic "GGUF", version u32, tensor count u64, metadata count u64; metadata as (string key, u32 type, value); tensor
infos as (string name, u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset); then the tensor data,
aligned to `general.alignment` (32 by default). Dequantisation is the `gguf` package's.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plmkit.errors import PlmkitError

# Metadata value types: fixed-size scalars by struct format; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml types stored as plain numbers; every other type is quantised blocks (dequantised by the gguf package).
_PLAIN = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64, 28: np.float64}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: innermost (contiguous) first
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def shape(self) -> tuple[int, ...]:
        """PyTorch order: (out, in) for a matrix."""
        return tuple(reversed(self.dims))


class _Cursor:
    def __init__(self, buffer: Any) -> None:
        self.buffer, self.pos = buffer, 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        raw = bytes(self.buffer[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, n = self.scalar("<I"), self.scalar("<Q")
            if item_kind in _SCALARS:  # one read for the whole array
                fmt = _SCALARS[item_kind]
                values = list(struct.unpack_from(f"<{n}{fmt[1]}", self.buffer, self.pos))
                self.pos += n * struct.calcsize(fmt)
                return values
            return [self.value(item_kind) for _ in range(n)]
        raise ValueError(f"unknown metadata value type {kind}")


class GGUFContents:
    """The metadata and tensor table of a GGUF file, with its data memory-mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise PlmkitError(f"{self.path}: not a valid GGUF file ({e})") from None

    def _parse(self) -> None:
        c = _Cursor(self._map)
        if bytes(self._map[:4]) != b"GGUF":
            raise ValueError("no GGUF magic number")
        c.pos = 4
        version = c.scalar("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (plmkit reads 2 and 3)")
        n_tensors, n_kv = c.scalar("<Q"), c.scalar("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = c.string()
            self.metadata[key] = c.value(c.scalar("<I"))
        self.tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name = c.string()
            dims = tuple(c.scalar("<Q") for _ in range(c.scalar("<I")))
            self.tensors.append(TensorInfo(name, dims, c.scalar("<I"), c.scalar("<Q")))
        alignment = int(self.metadata.get("general.alignment", 32))
        self.data_start = -(-c.pos // alignment) * alignment

    def array(self, info: TensorInfo) -> np.ndarray:
        """The tensor as stored: plain numbers shaped `info.shape`, or quantised blocks as uint8 rows (the layout
        `gguf.quants.dequantize` takes)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        count = int(np.prod(info.dims))
        start = self.data_start + info.offset
        if info.ggml_type in _PLAIN:
            dtype = np.dtype(_PLAIN[info.ggml_type])
            return np.frombuffer(self._map, dtype=dtype, count=count, offset=start).reshape(info.shape)
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
        row_bytes = info.dims[0] // block * size
        rows = count // info.dims[0]
        return np.frombuffer(self._map, dtype=np.uint8, count=rows * row_bytes, offset=start).reshape(
            *info.shape[:-1], row_bytes)

    def dequantized(self, info: TensorInfo) -> np.ndarray:
        """The tensor as float32, shaped `info.shape`."""
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize

        data = self.array(info)
        if info.ggml_type in _PLAIN:
            return data.astype(np.float32)  # a copy: the memory map is read-only
        return dequantize(data, GGMLQuantizationType(info.ggml_type)).astype(np.float32, copy=False)
