from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from edgellm.errors import ModelNotFoundError
from edgellm.models.gguf_info import ArrayValue, read_gguf_header, read_gguf_info

TinyGGUFWriter = Callable[..., Path]
TINY_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}"


def test_tiny_file_metadata(tiny_gguf: Path) -> None:
    info = read_gguf_info(tiny_gguf)

    assert info.path == tiny_gguf
    assert info.file_size == tiny_gguf.stat().st_size
    assert info.gguf_version == 3
    assert info.architecture == "llama"
    assert info.name == "Tiny Test Model"
    assert info.size_label == "1K"
    assert info.parameter_count == 100 * 8 + 8
    assert info.tensor_count == 2
    assert info.quantization == "F16"
    assert info.file_type == gguf.LlamaFileType.MOSTLY_F16
    assert (info.context_length, info.embedding_length, info.block_count) == (256, 8, 2)
    assert (info.head_count, info.head_count_kv) == (2, 1)
    assert info.vocab_size == 100
    assert info.tokenizer_model == "gpt2"
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert info.license == "apache-2.0"
    assert info.chat_template == TINY_TEMPLATE
    assert info.has_chat_template
    assert info.sha256 is None


def test_header_agrees_with_gguf_reader(tiny_gguf: Path) -> None:
    header = read_gguf_header(tiny_gguf)
    reference = gguf.GGUFReader(tiny_gguf)

    scalar_keys = [
        key
        for key, field in reference.fields.items()
        if not key.startswith("GGUF.") and field.types[0] != gguf.GGUFValueType.ARRAY
    ]
    for key in scalar_keys:
        assert header.metadata[key] == pytest.approx(reference.fields[key].contents()), key
    assert header.metadata["general.languages"] == ArrayValue(2, ("en", "fr"))
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert tokens == ArrayValue(100, None)  # long arrays are counted, not decoded
    assert [(t.name, t.n_elements) for t in header.tensors] == [
        (t.name, t.n_elements) for t in reference.tensors
    ]
    assert [t.ggml_type for t in header.tensors] == [int(t.tensor_type) for t in reference.tensors]


def test_big_endian_file(tmp_path: Path, write_tiny_gguf: TinyGGUFWriter) -> None:
    path = write_tiny_gguf(tmp_path / "big.gguf", endianess=gguf.GGUFEndian.BIG)

    info = read_gguf_info(path)

    assert (info.architecture, info.context_length, info.vocab_size) == ("llama", 256, 100)
    assert info.parameter_count == 808


def test_quantization_falls_back_to_dominant_tensor_type(
    tmp_path: Path, write_tiny_gguf: TinyGGUFWriter
) -> None:
    path = write_tiny_gguf(tmp_path / "no-file-type.gguf", file_type=None)

    info = read_gguf_info(path)

    # F16 embeddings outweigh the F32 norm, and F32 only counts when nothing else is there.
    assert info.file_type is None
    assert info.quantization == "F16"


def test_missing_chat_template(tmp_path: Path, write_tiny_gguf: TinyGGUFWriter) -> None:
    info = read_gguf_info(write_tiny_gguf(tmp_path / "base.gguf", chat_template=None))

    assert info.chat_template is None
    assert not info.has_chat_template


def test_sha256_only_on_request(tiny_gguf: Path) -> None:
    info = read_gguf_info(tiny_gguf, with_sha256=True)

    assert info.sha256 == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()


def test_truncated_file_is_rejected_clearly(tiny_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:300])

    with pytest.raises(ModelNotFoundError, match="not a readable GGUF model file") as caught:
        read_gguf_info(truncated)
    assert "\n" not in caught.value.message


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello, not a model")

    with pytest.raises(ModelNotFoundError, match="bad magic"):
        read_gguf_info(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        read_gguf_info(tmp_path / "absent.gguf")


def test_smollm2_metadata(smollm2_path: Path) -> None:
    info = read_gguf_info(smollm2_path)

    assert info.architecture == "llama"
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.size_label == "135M"
    assert info.parameter_count == 134_515_008
    assert info.tensor_count == 272
    assert info.quantization == "Q4_1"
    assert info.file_type == 3
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert info.block_count == 30
    assert (info.head_count, info.head_count_kv) == (9, 3)
    assert info.vocab_size == 49152
    assert info.tokenizer_model == "gpt2"
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert info.license == "apache-2.0"
    assert info.file_size == 98_362_432
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template  # ChatML


def test_gemma_metadata(gemma_path: Path) -> None:
    info = read_gguf_info(gemma_path)

    assert info.architecture == "gemma3"
    assert info.name == "Gemma 3 270m"
    assert info.size_label == "270M"
    assert info.parameter_count == 268_098_176
    assert info.tensor_count == 236
    assert info.quantization == "Q4_K_M"
    assert info.file_type == 15
    assert info.context_length == 32768
    assert info.embedding_length == 640
    assert info.block_count == 18
    assert (info.head_count, info.head_count_kv) == (4, 1)
    assert info.vocab_size == 262_144  # no gemma3.vocab_size key: counted from the token list
    assert info.tokenizer_model == "llama"
    assert (info.bos_token_id, info.eos_token_id) == (2, 1)
    assert info.license == "gemma"
    assert info.file_size == 253_113_024
    assert info.chat_template is None  # base model


def test_large_arrays_are_skipped_not_decoded(gemma_path: Path) -> None:
    # what keeps a server start quick: Gemma's 262k-entry vocabulary arrays are stepped over
    # (their length kept), only short arrays are decoded
    meta = read_gguf_header(gemma_path).metadata
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        assert meta[key] == ArrayValue(262_144, None), key
    short = [v for v in meta.values() if isinstance(v, ArrayValue) and v.items is not None]
    assert all(v.length == len(v.items or ()) for v in short)
