"""Tiny GGUF files written with the `gguf` package, so format tests need no real model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

TINY_VOCAB = [f"tok{index}" for index in range(100)]  # longer than the reader decodes
TINY_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}"

TinyGGUFWriter = Callable[..., Path]


def _write_tiny_gguf(
    path: Path,
    *,
    file_type: int | None = gguf.LlamaFileType.MOSTLY_F16,
    chat_template: str | None = TINY_TEMPLATE,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """A valid GGUF file of a made-up 2-block llama with 100 tokens and two tensors."""
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_name("Tiny Test Model")
    writer.add_size_label("1K")
    writer.add_license("apache-2.0")
    writer.add_array("general.languages", ["en", "fr"])
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_block_count(2)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TINY_VOCAB)
    writer.add_token_scores([0.0] * len(TINY_VOCAB))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((100, 8), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def write_tiny_gguf() -> TinyGGUFWriter:
    """`write_tiny_gguf(path, file_type=..., chat_template=..., endianess=...) -> path`."""
    return _write_tiny_gguf


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return _write_tiny_gguf(tmp_path / "tiny-model.gguf")
