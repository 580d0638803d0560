"""Decode speed: vishwam's engine vs transformers, same SmolLM2-135M-Instruct weights, f32, 2 threads.

Each side runs in its own process, one after the other, on the same chat-templated prompt, greedy,
after a warm-up (compilation excluded). Reports batch-1 tokens/s for both, vishwam's batch-8
aggregate, and the ratios.

    .venv/bin/python bench/decode.py [--model DIR] [--new-tokens 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "Write a short story about a robot who learns to paint."

VISHWAM = """
import json, sys
from vishwam_core.checkpoint import load_model, load_tokenizer
from vishwam_core.chat import render_prompt
from vishwam_core.generate import Engine, SamplingParams
model_dir, new, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = load_tokenizer(model_dir)
engine = Engine(load_model(model_dir))
ids = render_prompt(tok, chat=prompt)
params = SamplingParams(max_new_tokens=new)
out = {}
for batch in (1, 8):
    engine.generate([ids] * batch, params)  # warm-up: compiles this bucket
    runs = [engine.generate([ids] * batch, params) for _ in range(3)]
    best = max(runs, key=lambda r: r.decode_tokens_per_s)
    out[f"batch{batch}"] = {"decode_tokens_per_s": best.decode_tokens_per_s,
                            "prefill_tokens_per_s": best.prefill_tokens_per_s}
out["prompt_tokens"] = len(ids)
print(json.dumps(out))
"""

TRANSFORMERS = """
import json, sys, time, torch
torch.set_num_threads(2)
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, new, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
ids = ids["input_ids"] if hasattr(ids, "keys") else ids
mask = torch.ones_like(ids)
def run():
    with torch.no_grad():
        t = time.perf_counter()
        model(ids, attention_mask=mask)  # prefill alone, to subtract it
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        total = time.perf_counter() - t
    n = out.shape[1] - ids.shape[1]
    return (n - 1) / (total - t_prefill), ids.shape[1] / t_prefill
run()
best = max(run() for _ in range(3))
print(json.dumps({"batch1": {"decode_tokens_per_s": best[0], "prefill_tokens_per_s": best[1]},
                  "prompt_tokens": int(ids.shape[1])}))
"""


def child(code: str, model_dir: str, new: int) -> dict:
    env = {"OMP_NUM_THREADS": "2", "XLA_FLAGS": ""}
    import os

    proc = subprocess.run(
        [sys.executable, "-c", code, model_dir, str(new), PROMPT],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory (default: convert the bundled SmolLM2)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from vishwam_core.checkpoint import convert_model

            model_dir = str(Path(tmp) / "smollm2")
            convert_model("smollm2-135m-instruct", model_dir)
        v = child(VISHWAM, model_dir, args.new_tokens)
        t = child(TRANSFORMERS, model_dir, args.new_tokens)
    result = {
        "vishwam": v,
        "transformers": t,
        "batch1_speedup": round(v["batch1"]["decode_tokens_per_s"] / t["batch1"]["decode_tokens_per_s"], 2),
        "batch8_over_batch1": round(
            v["batch8"]["decode_tokens_per_s"] / v["batch1"]["decode_tokens_per_s"], 2
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"SmolLM2-135M-Instruct, f32, greedy, {args.new_tokens} new tokens, prompt {v['prompt_tokens']} tokens"
    )
    print(
        f"  transformers batch 1: {t['batch1']['decode_tokens_per_s']:.1f} tok/s decode, "
        f"{t['batch1']['prefill_tokens_per_s']:.0f} tok/s prefill"
    )
    print(
        f"  vishwam      batch 1: {v['batch1']['decode_tokens_per_s']:.1f} tok/s decode, "
        f"{v['batch1']['prefill_tokens_per_s']:.0f} tok/s prefill"
    )
    print(f"  vishwam      batch 8: {v['batch8']['decode_tokens_per_s']:.1f} tok/s aggregate decode")
    print(
        f"  batch-1 speedup over transformers: {result['batch1_speedup']}x; "
        f"batch 8 / batch 1: {result['batch8_over_batch1']}x"
    )


if __name__ == "__main__":
    main()
