"""Metadata of a GGUF model file, read from its header only.

`gguf.GGUFReader` decodes every element of every metadata array in Python, which takes seconds
to tens of seconds on a vocabulary of 262k tokens. This reader walks the same header with
`struct` over a memory map and only counts large arrays, so it touches a few megabytes of the
file at most and never the tensor data. The `gguf` package still provides the format's
constants (value types, tensor types, file types).
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf
from pydantic import BaseModel, ConfigDict

from edgellm.errors import ModelNotFoundError
from edgellm.models.assembly import file_sha256

# Arrays up to this length are decoded (e.g. general.languages); longer ones are only counted.
_MAX_DECODED_ARRAY = 64
_GUESSED_FILE_TYPE_FLAG = 1024

_SCALAR_FORMATS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}
_STRING = int(gguf.GGUFValueType.STRING)
_ARRAY = int(gguf.GGUFValueType.ARRAY)

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array: its length always, its items only when it is short."""

    length: int
    items: tuple[Scalar | ArrayValue, ...] | None


MetadataValue = Scalar | ArrayValue


@dataclass(frozen=True)
class TensorEntry:
    name: str
    ggml_type: int
    n_elements: int


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, MetadataValue]
    tensors: tuple[TensorEntry, ...]


class GGUFInfo(BaseModel):
    """What EdgeLLM needs to know about a model file before loading it."""

    model_config = ConfigDict(frozen=True)

    path: Path
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    size_label: str | None
    parameter_count: int
    tensor_count: int
    quantization: str
    file_type: int | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    license: str | None
    chat_template: str | None
    sha256: str | None = None

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)


class _HeaderCursor:
    """Sequential reader over the header bytes; raises ValueError past the end of the file."""

    def __init__(self, buffer: mmap.mmap, byte_order: str) -> None:
        self._buffer = buffer
        self._byte_order = byte_order
        self._layouts: dict[str, struct.Struct] = {}
        self.offset = 0

    def _layout(self, fmt: str) -> struct.Struct:
        layout = self._layouts.get(fmt)
        if layout is None:
            layout = self._layouts[fmt] = struct.Struct(self._byte_order + fmt)
        return layout

    def unpack(self, fmt: str) -> tuple[Scalar, ...]:
        layout = self._layout(fmt)
        if self.offset + layout.size > len(self._buffer):
            raise ValueError(f"header ends unexpectedly at byte {self.offset}")
        values = layout.unpack_from(self._buffer, self.offset)
        self.offset += layout.size
        return values

    def uint32(self) -> int:
        return int(self.unpack("I")[0])

    def uint64(self) -> int:
        return int(self.unpack("Q")[0])

    def string(self) -> str:
        raw = self._take(self.uint64())
        return raw.decode("utf-8", errors="replace")

    def value(self, value_type: int) -> MetadataValue:
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            return self._array()
        fmt = _SCALAR_FORMATS.get(value_type)
        if fmt is None:
            raise ValueError(f"unknown metadata value type {value_type}")
        return self.unpack(fmt)[0]

    def _array(self) -> ArrayValue:
        item_type = self.uint32()
        length = self.uint64()
        if length <= _MAX_DECODED_ARRAY:
            return ArrayValue(length, tuple(self.value(item_type) for _ in range(length)))
        fmt = _SCALAR_FORMATS.get(item_type)
        if fmt is not None:
            self._skip(length * struct.calcsize(fmt))
        elif item_type == _STRING:
            self._skip_strings(length)
        else:
            for _ in range(length):
                self.value(item_type)
        return ArrayValue(length, None)

    def _skip_strings(self, count: int) -> None:
        """Hot loop over vocabularies (262k tokens for Gemma 3): kept to one unpack per item."""
        read_length = self._layout("Q").unpack_from
        buffer, offset = self._buffer, self.offset
        try:
            for _ in range(count):
                offset += 8 + read_length(buffer, offset)[0]
        except struct.error as error:
            raise ValueError(f"header ends unexpectedly after byte {offset}") from error
        self.offset = offset
        self._skip(0)  # the last string may end past the file

    def _take(self, size: int) -> bytes:
        start = self.offset
        self._skip(size)
        return self._buffer[start : self.offset]

    def _skip(self, size: int) -> None:
        if self.offset + size > len(self._buffer):
            raise ValueError(f"header ends unexpectedly at byte {self.offset}")
        self.offset += size


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the key/value metadata and the tensor directory of a GGUF file."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        if len(buffer) < 8 or struct.unpack_from("<I", buffer, 0)[0] != gguf.GGUF_MAGIC:
            raise ValueError("not a GGUF file (bad magic bytes)")
        little_version = struct.unpack_from("<I", buffer, 4)[0]
        # A file written on a big-endian host shows its version in the high half-word.
        byte_order = "<" if little_version & 0xFFFF else ">"
        cursor = _HeaderCursor(buffer, byte_order)
        cursor.offset = 4
        version = cursor.uint32()
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        tensor_count = cursor.uint64()
        kv_count = cursor.uint64()
        metadata: dict[str, MetadataValue] = {}
        for _ in range(kv_count):
            key = cursor.string()
            metadata[key] = cursor.value(cursor.uint32())
        tensors = tuple(_read_tensor_entry(cursor) for _ in range(tensor_count))
    return GGUFHeader(version=version, metadata=metadata, tensors=tensors)


def _read_tensor_entry(cursor: _HeaderCursor) -> TensorEntry:
    name = cursor.string()
    n_dims = cursor.uint32()
    n_elements = 1
    for _ in range(n_dims):
        n_elements *= cursor.uint64()
    ggml_type = cursor.uint32()
    cursor.uint64()  # data offset, not needed
    return TensorEntry(name=name, ggml_type=ggml_type, n_elements=n_elements)


def read_gguf_info(path: Path, *, with_sha256: bool = False) -> GGUFInfo:
    """Summarise a GGUF file. `with_sha256` hashes the whole file, which takes seconds."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file '{path}' does not exist")
    try:
        header = read_gguf_header(path)
    except (ValueError, OSError) as error:
        raise ModelNotFoundError(f"'{path}' is not a readable GGUF model file: {error}") from error
    meta = header.metadata
    architecture = _text(meta.get("general.architecture")) or "unknown"
    file_type = _integer(meta.get("general.file_type"))
    return GGUFInfo(
        path=path,
        file_size=path.stat().st_size,
        gguf_version=header.version,
        architecture=architecture,
        name=_text(meta.get("general.name")),
        size_label=_text(meta.get("general.size_label")),
        parameter_count=sum(tensor.n_elements for tensor in header.tensors),
        tensor_count=len(header.tensors),
        quantization=_quantization_name(file_type, header.tensors),
        file_type=file_type,
        context_length=_integer(meta.get(f"{architecture}.context_length")),
        embedding_length=_integer(meta.get(f"{architecture}.embedding_length")),
        block_count=_integer(meta.get(f"{architecture}.block_count")),
        head_count=_integer(meta.get(f"{architecture}.attention.head_count")),
        head_count_kv=_integer(meta.get(f"{architecture}.attention.head_count_kv")),
        vocab_size=_vocab_size(meta, architecture),
        tokenizer_model=_text(meta.get("tokenizer.ggml.model")),
        bos_token_id=_integer(meta.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_integer(meta.get("tokenizer.ggml.eos_token_id")),
        license=_text(meta.get("general.license")),
        chat_template=_text(meta.get("tokenizer.chat_template")),
        sha256=file_sha256(path) if with_sha256 else None,
    )


def _text(value: MetadataValue | None) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: MetadataValue | None) -> int | None:
    """An integer key; per-layer arrays (some architectures) are summarised by their maximum."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, ArrayValue) and value.items:
        numbers = [item for item in value.items if isinstance(item, int)]
        return max(numbers) if numbers else None
    return None


def _vocab_size(meta: dict[str, MetadataValue], architecture: str) -> int | None:
    declared = _integer(meta.get(f"{architecture}.vocab_size"))
    if declared is not None:
        return declared
    tokens = meta.get("tokenizer.ggml.tokens")
    return tokens.length if isinstance(tokens, ArrayValue) else None


def _quantization_name(file_type: int | None, tensors: tuple[TensorEntry, ...]) -> str:
    if file_type is not None:
        try:
            name: str = gguf.LlamaFileType(file_type & ~_GUESSED_FILE_TYPE_FLAG).name
        except ValueError:
            pass
        else:
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return _dominant_tensor_type(tensors)


def _dominant_tensor_type(tensors: tuple[TensorEntry, ...]) -> str:
    """The tensor type holding most weights; F32 norms and biases count only if alone."""
    weights: Counter[int] = Counter()
    for tensor in tensors:
        weights[tensor.ggml_type] += tensor.n_elements
    f32 = int(gguf.GGMLQuantizationType.F32)
    quantized = {kind: count for kind, count in weights.items() if kind != f32}
    ranking = Counter(quantized) if quantized else weights
    if not ranking:
        return "unknown"
    kind = ranking.most_common(1)[0][0]
    try:
        return str(gguf.GGMLQuantizationType(kind).name)
    except ValueError:
        return f"type-{kind}"
