#!/usr/bin/env python3
"""Writes an f32 GGUF of random weights in a model config's shape, for timing llama.cpp
against `tvl bench` on the same shape (the README's "Against llama.cpp on the same host").

    python3 scripts/llama-cpp-gguf.py model-configs/stories110M.toml \
        ../shared/models/tokenizer.bin out-f32.gguf

then `llama-quantize out-f32.gguf out-q8_0.gguf Q8_0` (or `Q4_0`, or `--pure ... Q4_0`) and
`llama-bench -m out-q8_0.gguf -p 0 -n 64 -r 5 -t 1`. The weights are random (normal, σ 0.02;
norms 1): the speed of a decode does not depend on them. The classifier is tied to the
embedding where the config says `shared_classifier` (the stories models). Needs Python 3.11
(tomllib), numpy and llama.cpp's `gguf` package (its `gguf-py`, or `pip install gguf`).
"""

import struct
import sys
import tomllib

import numpy as np
import gguf


def read_tokenizer(path, vocab_size):
    """llama2.c's tokenizer.bin: max length, then per token a score, a length and the bytes."""
    with open(path, "rb") as f:
        data = f.read()
    (offset, pieces, scores) = (4, [], [])
    for _ in range(vocab_size):
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        pieces.append(data[offset : offset + length].decode("utf-8", errors="replace"))
        scores.append(score)
        offset += length
    return pieces, scores


def token_type(index, piece):
    if index == 0:
        return gguf.TokenType.UNKNOWN
    if index in (1, 2):
        return gguf.TokenType.CONTROL
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return gguf.TokenType.BYTE
    return gguf.TokenType.NORMAL


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    config_path, tokenizer_path, out_path = sys.argv[1:]
    with open(config_path, "rb") as f:
        model = tomllib.load(f)
    dim, hidden, layers = model["dim"], model["hidden_dim"], model["n_layers"]
    heads, kv_heads = model["n_heads"], model.get("n_kv_heads", model["n_heads"])
    vocab, seq_len = model["vocab_size"], model["seq_len"]
    head_dim, kv_dim = dim // heads, dim // heads * kv_heads

    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_name("tvl random " + config_path)
    writer.add_context_length(seq_len)
    writer.add_embedding_length(dim)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(model.get("norm_eps", 1e-5))
    writer.add_rope_freq_base(model.get("rope_theta", 10000.0))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    pieces, scores = read_tokenizer(tokenizer_path, vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p.replace(" ", "\u2581") for p in pieces])
    writer.add_token_scores(scores)
    writer.add_token_types([token_type(i, p) for i, p in enumerate(pieces)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    rng = np.random.default_rng(110)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", matrix(vocab, dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    if not model.get("shared_classifier", True):
        writer.add_tensor("output.weight", matrix(vocab, dim))
    for l in range(layers):
        writer.add_tensor(f"blk.{l}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"blk.{l}.attn_q.weight", matrix(dim, dim))
        writer.add_tensor(f"blk.{l}.attn_k.weight", matrix(kv_dim, dim))
        writer.add_tensor(f"blk.{l}.attn_v.weight", matrix(kv_dim, dim))
        writer.add_tensor(f"blk.{l}.attn_output.weight", matrix(dim, dim))
        writer.add_tensor(f"blk.{l}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"blk.{l}.ffn_gate.weight", matrix(hidden, dim))
        writer.add_tensor(f"blk.{l}.ffn_up.weight", matrix(hidden, dim))
        writer.add_tensor(f"blk.{l}.ffn_down.weight", matrix(dim, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
