"""Evaluation: perplexity, the lm-evaluation-harness backend, offline task packs, sandboxed code
execution and the report card.

- `run.run_eval`: what `vishwam eval` does (checkpoints x tasks through lm-eval, perplexity, outputs).
- `backend.VishwamLM`: lm-eval's `LM` for a vishwam model (registered as `vishwam`); `backend.Scorer`
  scores loglikelihoods with shared-context KV reuse.
- `tasks`: `vishwam convert tasks` (BIG-bench, HumanEval, GSM8K, MMLU, ARC/OpenBookQA, MBPP, domain packs).
- `metrics`: the scoring functions packs name (GSM8K answers, BIG-bench exact match, pass@k).
- `sandbox`: running untrusted code confined.
- `perplexity`, `report`: numbers and tables.

lm-eval scores, vishwam answers: prompts, few-shot sampling and metrics are lm-eval's, so numbers are
comparable with its own backends. Nothing here knows HTTP or terminals, and importing this package
imports neither jax nor lm_eval (the submodules that need them import them).
"""
