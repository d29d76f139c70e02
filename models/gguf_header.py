"""A fast, header-only GGUF reader: metadata and tensor shapes, without touching the weights.

The ``gguf`` package's reader maps the whole file and builds numpy views of every array; on a large
model that is slow and needs the whole file present. This reads the header sequentially from any
binary stream (a local file, or later an HTTP range reader), keeping large arrays (the tokenizer's
vocabulary) only as their length.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this are kept as ArrayInfo (type and length) instead of their values.
MAX_KEPT_ARRAY = 1024

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not GGUF, is truncated, or uses a feature this reader does not know."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep: its element type and length."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    ggml_type: int
    offset: int  # from the start of the data section
    part: int = 0  # which file of a split model holds it (offsets are per file)

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"

    @property
    def n_bytes(self) -> int:
        """Bytes of this tensor's data, from its ggml type's block size."""
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        except (ValueError, KeyError):
            raise GGUFError(f"tensor {self.name} has an unknown ggml type {self.ggml_type}") from None
        return self.n_elements // block * size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError("the file names no general.architecture")
        return arch

    def arch_value(self, key: str, default: Any = None) -> Any:
        """``{architecture}.{key}`` from the metadata."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def data_bytes(self) -> int:
        """Where the last tensor's data ends, relative to the data section."""
        return max((t.offset + t.n_bytes for t in self.tensors), default=0)

    @property
    def file_bytes(self) -> int:
        """The size a complete file with this header has (up to the last tensor's end)."""
        return self.data_offset + self.data_bytes


class _Reader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.position = 0

    def take(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise GGUFError("truncated GGUF header")
        self.position += n
        return data

    def scalar(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        length = self.scalar("<Q", 8)
        if length > 1 << 30:
            raise GGUFError("corrupt GGUF header (string length)")
        return self.take(length).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.scalar("<Q", 8))

    def value(self, value_type: int) -> Any:
        if value_type in _SCALARS:
            return self.scalar(*_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type = self.scalar("<I", 4)
            length = self.scalar("<Q", 8)
            if length > MAX_KEPT_ARRAY:
                self._skip_array(item_type, length)
                return ArrayInfo(item_type, length)
            return [self.value(item_type) for _ in range(length)]
        raise GGUFError(f"unknown GGUF value type {value_type}")

    def _skip_array(self, item_type: int, length: int) -> None:
        if item_type in _SCALARS:
            self.take(_SCALARS[item_type][1] * length)
        elif item_type == _STRING:
            for _ in range(length):
                self.skip_string()
        else:
            for _ in range(length):
                self.value(item_type)


def read_header(read: Callable[[int], bytes]) -> GGUFHeader:
    """Parse a GGUF header from ``read(n)`` calls that return the next n bytes of the file."""
    reader = _Reader(read)
    if reader.take(4) != MAGIC:
        raise GGUFError("not a GGUF file")
    version = reader.scalar("<I", 4)
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version} (big-endian files are not supported)")
    n_tensors = reader.scalar("<Q", 8)
    n_kv = reader.scalar("<Q", 8)
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise GGUFError("corrupt GGUF header (counts)")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("<I", 4))
    tensors = []
    for _ in range(n_tensors):
        name = reader.string()
        n_dims = reader.scalar("<I", 4)
        if n_dims > 8:
            raise GGUFError(f"corrupt GGUF header (tensor {name} has {n_dims} dimensions)")
        shape = tuple(reader.scalar("<Q", 8) for _ in range(n_dims))
        ggml_type = reader.scalar("<I", 4)
        offset = reader.scalar("<Q", 8)
        tensors.append(TensorInfo(name, shape, ggml_type, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    data_offset = -(-reader.position // alignment) * alignment
    return GGUFHeader(version, metadata, tuple(tensors), data_offset)


def read_header_stream(stream: BinaryIO) -> GGUFHeader:
    return read_header(stream.read)


def read_gguf_file(path: Path) -> GGUFHeader:
    """The header of a local GGUF file, checked against the file's size."""
    try:
        size = path.stat().st_size
        with path.open("rb", buffering=1 << 20) as stream:
            header = read_header_stream(stream)
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror}") from None
    except GGUFError as exc:
        raise GGUFError(f"{path}: {exc}") from None
    misplaced = misplaced_tensor(header)
    if misplaced:
        raise GGUFError(f"{path}: corrupt GGUF file ({misplaced})")
    if header.file_bytes > size:
        raise GGUFError(f"{path}: truncated GGUF file ({size} bytes; its tensors need {header.file_bytes})")
    return header


def misplaced_tensor(header: GGUFHeader) -> str | None:
    """Why the tensors' data is not laid out as llama.cpp requires (each one where the previous one
    ends, padded to the alignment: gguf.cpp refuses anything else), or None. Checked here so that a
    corrupt offset is reported in one line before llama.cpp reads the file."""
    alignment = int(header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    expected = 0
    for tensor in header.tensors:
        if tensor.offset != expected:
            return f"tensor {tensor.name} is at offset {tensor.offset}, expected {expected}"
        expected += -(-tensor.n_bytes // alignment) * alignment
    return None


_SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(first: Path) -> list[Path]:
    """The files of a split model given its first part (``name-00001-of-00003.gguf``, as llama.cpp's
    gguf-split names them); ``[first]`` for an ordinary file. GGUFError when a part is missing."""
    match = _SPLIT_NAME.match(first.name)
    if match is None:
        return [first]
    count = int(match.group("count"))
    prefix = match.group("prefix")
    parts = [first.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise GGUFError(f"{first.name}: split model with missing parts: {', '.join(missing)}")
    return parts


def merge_split_headers(headers: Sequence[GGUFHeader]) -> GGUFHeader:
    """One header for a split model: the first part's metadata with every part's tensors (each part of
    a gguf-split model lists only its own tensors; split.tensors.count says how many there are in all)."""
    first = headers[0]
    tensors = tuple(replace(t, part=i) for i, h in enumerate(headers) for t in h.tensors)
    expected = first.metadata.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise GGUFError(f"split model: {len(tensors)} tensors in {len(headers)} parts, expected {expected}")
    return GGUFHeader(first.version, first.metadata, tensors, first.data_offset)
