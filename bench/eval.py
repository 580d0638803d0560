"""Loglikelihood throughput: lm-eval with the vishwam backend vs lm-eval's own `hf` backend.

The BIG-bench date_understanding multiple-choice pack (369 questions, 2156 loglikelihood requests;
`tests/data/bigbench`, converted by `vishwam convert tasks`), SmolLM2-135M-Instruct with the same f32
weights and tokenizer on both sides, zero-shot. Each side runs `lm_eval.simple_evaluate` once in its
own process with 2 threads, one after the other; the time is simple_evaluate's wall clock (task
building, every request, scoring; model loading excluded; vishwam's XLA compilation included, with no
persistent cache; torch's OpenMP threads wait passively). Reports requests/s, the ratio, both
accuracies, the largest per-request loglikelihood difference and the load average.

    .venv/bin/python bench/eval.py [--model DIR] [--limit N] [--batch-size 64] [--hf-batch-size 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys, time
backend, model_dir, pack, limit, batch = sys.argv[1:6]
limit = int(limit) or None
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
tm = TaskManager(include_path=pack, include_defaults=False)
if backend == "vishwam":
    from vishwam_core.evaluate.backend import VishwamLM
    lm = VishwamLM(model_dir, batch_size=int(batch))
    kwargs = {"model": lm}
else:
    import torch
    torch.set_num_threads(2)
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=int(batch))
    kwargs = {"model": lm}
t = time.perf_counter()
r = simple_evaluate(tasks=["date_understanding"], task_manager=tm, limit=limit, log_samples=True, **kwargs)
seconds = time.perf_counter() - t
samples = r["samples"]["date_understanding"]
lls = [resp[0][0] for s in samples for resp in s["resps"]]
out = {"seconds": seconds, "requests": len(lls), "documents": len(samples),
       "acc": r["results"]["date_understanding"]["acc,none"], "loglikelihoods": lls}
if backend == "vishwam":
    out["compile_seconds"] = lm.scorer.compile_seconds
    out["forward_tokens"] = lm.scorer.forward_tokens
print(json.dumps(out))
"""


def child(backend: str, model_dir: str, pack: str, limit: int, batch: int, hf_home: str) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        # torch's OpenMP threads otherwise spin while waiting, which on a shared machine made the hf
        # backend 2.5x slower; passive waiting is its better setting here.
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HOME": hf_home,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, backend, model_dir, pack, str(limit), str(batch)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model directory (default: convert the bundled SmolLM2)")
    parser.add_argument("--limit", type=int, default=0, help="questions (0 = all 369)")
    parser.add_argument("--batch-size", type=int, default=64, help="vishwam's continuations per batch")
    parser.add_argument("--hf-batch-size", type=int, default=16, help="the hf backend's batch size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from vishwam_core.evaluate.tasks import convert_tasks

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from vishwam_core.checkpoint import convert_model

            model_dir = str(Path(tmp) / "smollm2")
            convert_model("smollm2-135m-instruct", model_dir)
        pack = str(Path(tmp) / "pack")
        convert_tasks(ROOT / "tests" / "data" / "bigbench" / "date_understanding", pack)
        hf_home = str(Path(tmp) / "hf_home")
        v = child("vishwam", model_dir, pack, args.limit, args.batch_size, hf_home)
        h = child("hf", model_dir, pack, args.limit, args.hf_batch_size, hf_home)
    diffs = [abs(a - b) for a, b in zip(v.pop("loglikelihoods"), h.pop("loglikelihoods"), strict=True)]
    result = {
        "vishwam": {**v, "requests_per_s": v["requests"] / v["seconds"]},
        "hf": {**h, "requests_per_s": h["requests"] / h["seconds"]},
        "speedup": round(h["seconds"] / v["seconds"], 2),
        "max_abs_loglikelihood_diff": max(diffs),
        "settings": {"vishwam_batch_size": args.batch_size, "hf_batch_size": args.hf_batch_size},
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"date_understanding: {v['documents']} questions, {v['requests']} loglikelihood requests, f32, 2 threads"
    )
    print(
        f"  hf backend (batch {args.hf_batch_size}): {h['seconds']:.1f} s, "
        f"{result['hf']['requests_per_s']:.1f} requests/s, acc {h['acc']:.4f}"
    )
    print(
        f"  vishwam    (batch {args.batch_size}): {v['seconds']:.1f} s (compile {v['compile_seconds']:.1f} s), "
        f"{result['vishwam']['requests_per_s']:.1f} requests/s, acc {v['acc']:.4f}"
    )
    print(f"  speedup {result['speedup']}x; largest per-request loglikelihood difference {max(diffs):.2e}")
    print(f"  load average at the end: {result['load_average']:.1f}")


if __name__ == "__main__":
    main()
