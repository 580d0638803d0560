"""GGUF import across tensor types, on a tiny llama GGUF written here with gguf-py the way llama.cpp's
converter lays it out (q/k rows permuted), checked against transformers' own GGUF loader."""

import numpy as np
import pytest
import torch

from vishwam_core.checkpoint import convert_model, load_model
from vishwam_core.model import forward_fn

D, F, N, K, L = 256, 512, 4, 2, 2  # K-quants need rows of 256 values
HD = D // N
VOCAB = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["<s>", "</s>"]

# (tensor, type) for the two blocks: every type vishwam must read appears once.
TYPES = {
    0: {"attn_q": "F16", "attn_k": "BF16", "attn_v": "Q8_0", "attn_output": "Q4_0",
        "ffn_gate": "Q4_1", "ffn_up": "Q5_0", "ffn_down": "Q5_1"},
    1: {"attn_q": "Q4_K", "attn_k": "Q5_K", "attn_v": "Q6_K", "attn_output": "Q2_K",
        "ffn_gate": "Q3_K", "ffn_up": "F32", "ffn_down": "Q8_0"},
}  # fmt: skip

# Where the f16 scale fields sit in each K-quant block (bytes), so random blocks decode to sane values.
K_LAYOUT = {"Q2_K": (84, [80, 82]), "Q3_K": (110, [108]), "Q4_K": (144, [0, 2]), "Q5_K": (176, [0, 2]),
            "Q6_K": (210, [208])}  # fmt: skip


def _permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (for its interleaved RoPE)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _k_quant_blocks(rng, qtype, rows, cols):
    block_bytes, scale_offsets = K_LAYOUT[qtype]
    blocks = rng.integers(0, 256, (rows * cols // 256, block_bytes), dtype=np.uint8)
    for off in scale_offsets:
        blocks[:, off : off + 2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    import gguf
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_rope_dimension_count(HD)
    w.add_head_count(N)
    w.add_head_count_kv(K)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(VOCAB))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(VOCAB)
    w.add_token_types([1] * 26 + [3, 3])
    w.add_token_merges([])
    w.add_bos_token_id(26)
    w.add_eos_token_id(27)

    def add(name, value, qtype="F32"):
        if qtype in K_LAYOUT:
            w.add_tensor(name, _k_quant_blocks(rng, qtype, *value.shape), raw_dtype=T[qtype])
        elif qtype == "F32":
            w.add_tensor(name, value.astype(np.float32))
        else:
            w.add_tensor(name, gguf.quants.quantize(value, T[qtype]), raw_dtype=T[qtype])

    add("token_embd.weight", rng.normal(0, 0.1, (len(VOCAB), D)).astype(np.float32))
    add("output_norm.weight", 1 + 0.1 * rng.normal(size=D).astype(np.float32))
    add("output.weight", rng.normal(0, 0.05, (len(VOCAB), D)).astype(np.float32), "Q8_0")
    shapes = {"attn_q": (D, D), "attn_k": (K * HD, D), "attn_v": (K * HD, D), "attn_output": (D, D),
              "ffn_gate": (F, D), "ffn_up": (F, D), "ffn_down": (D, F)}  # fmt: skip
    for i in range(L):
        add(f"blk.{i}.attn_norm.weight", 1 + 0.1 * rng.normal(size=D).astype(np.float32))
        add(f"blk.{i}.ffn_norm.weight", 1 + 0.1 * rng.normal(size=D).astype(np.float32))
        for name, shape in shapes.items():
            value = rng.normal(0, 0.05, shape).astype(np.float32)
            if name in ("attn_q", "attn_k"):
                value = _permute(value, N if name == "attn_q" else K)
            add(f"blk.{i}.{name}.weight", value, TYPES[i][name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_every_tensor_type_imports_and_matches_transformers(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    summary = convert_model(str(tiny_gguf), tmp_path / "out")
    types = summary["source"]["tensor_types"]
    assert {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
            "Q6_K"} <= set(types)  # fmt: skip
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name,
                                              dtype=torch.float32).eval()  # fmt: skip
    tokens = np.random.default_rng(1).integers(0, len(VOCAB), (2, 17))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    fwd, state = forward_fn(load_model(tmp_path / "out"))
    got = np.asarray(fwd(state, tokens)[0])
    assert np.abs(got - expected).max() <= 1e-4
    assert not np.allclose(got, 0)


def test_the_tokenizer_comes_from_the_gguf_vocabulary(tiny_gguf, tmp_path):
    from vishwam_core.checkpoint import load_tokenizer

    convert_model(str(tiny_gguf), tmp_path / "out")
    tok = load_tokenizer(tmp_path / "out")
    assert tok.encode("abc") == [0, 1, 2]
    assert tok.eos_id == 27 and tok.decode([7, 4, 11, 11, 14]) == "hello"
