"""Architecture arithmetic: parameters, FLOPs, memory and cost, exact and without JAX.

Used by `vishwam analyze` and by the training loop's MFU. Knows nothing of the CLI.
"""

from __future__ import annotations

from vishwam_core.config import ModelConfig, param_counts


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: every linear layer plus the output head
    (the tied embedding is a matmul at the head; the input lookup and the norms are not)."""
    c = param_counts(cfg)
    norms = cfg.n_layers * 2 * cfg.d_model + cfg.d_model
    biases = cfg.n_layers * (cfg.q_dim + 2 * cfg.kv_dim) if cfg.qkv_bias else 0
    return c["non_embedding"] - norms - biases + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """FLOPs per token at context `seq_len` (PaLM appendix B convention, no causal discount):
    forward = 2 * matmul params + 4 * n_layers * seq_len * q_dim (scores QK^T and the weighted sum AV);
    train = 3 * forward (backward costs twice the forward)."""
    dense = 2 * matmul_params(cfg)
    attention = 4 * cfg.n_layers * seq_len * cfg.q_dim
    forward = dense + attention
    return {"forward": forward, "train": 3 * forward, "attention_forward": attention, "dense_forward": dense}
