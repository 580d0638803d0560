"""Training throughput: vishwam's train step vs Hugging Face transformers' LlamaForCausalLM (PyTorch eager)
on the same config, the same token batches and the same update (AdamW, global-norm clip 1.0), one run.

Each side runs in its own child process (so thread pools and allocators do not mix) with 2 threads;
the parent drives them in alternating rounds of a few steps, so load from anything else on the machine
falls on both alike. Reports tokens/s (median step), MFU against the CPU's measured f32 matmul peak
(the one `vishwam pretrain` uses), CPU seconds per step, the ratios and the load average (the
machines are shared: quote ratios from one run).

    .venv/bin/python bench/train.py [--preset demo] [--batch 8] [--seq 256] [--rounds 6] [--steps 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2

# Child protocol: the child prints "ready" after warmup (compile), then for each "run N" line on stdin
# times N steps and prints their durations as a JSON list; "quit" ends it.
VISHWAM = r"""
import json, sys, time
import jax, numpy as np
from vishwam_core.config import ModelConfig
from vishwam_core.sharding import make_mesh
from vishwam_core.train import Trainer, resolve_run_config

preset, B, T, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = np.load(sys.argv[5])
cfg = resolve_run_config({
    "model": {"name": preset, "remat": sys.argv[6]},
    "data": {"path": "bench", "batch_size": B},
    "optim": {"lr": 1e-3, "schedule": "constant", "weight_decay": 0.1, "grad_clip": 1.0, "b2": 0.95},
    "out": "unused", "steps": 10**6, "seed": seed,
})
model_cfg = ModelConfig.from_name(preset)
mesh = make_mesh("data=1")
with jax.set_mesh(mesh):
    tr = Trainer(model_cfg, cfg, mesh, 10**6, T)
    state = tr.init_state()
    n = len(rows) // B
    batches = [tr.to_global({"input_ids": rows[i * B:(i + 1) * B]}) for i in range(n)]
    i = 0
    for _ in range(2):  # compile, then one warm step
        state, m = tr.step_fn(state, batches[i % n]); float(m["loss"]); i += 1
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("quit"):
            break
        times, cpu = [], []
        for _ in range(int(line.split()[1])):
            t, c = time.perf_counter(), time.process_time()
            state, m = tr.step_fn(state, batches[i % n])
            float(m["loss"])  # the host reads the loss every step, as the training loop does
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            i += 1
        print(json.dumps({"times": times, "cpu": cpu, "loss": float(m["loss"])}), flush=True)
"""

TORCH = r"""
import json, sys, time
import numpy as np, torch
import transformers as tf
from vishwam_core.config import ModelConfig

torch.set_num_threads(int(sys.argv[6]))
preset, B, T, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = torch.as_tensor(np.load(sys.argv[5]), dtype=torch.long)
torch.manual_seed(seed)
c = ModelConfig.from_name(preset)
hf = tf.LlamaConfig(**{k: v for k, v in c.to_hf_config().items() if k not in ("architectures", "model_type")})
model = tf.LlamaForCausalLM(hf).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
n = len(rows) // B

def step(i):
    batch = rows[(i % n) * B:(i % n + 1) * B]
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    loss = model(input_ids=inputs, labels=targets, shift_labels=targets).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()

i = 0
for _ in range(2):
    step(i); i += 1
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("quit"):
        break
    times, cpu = [], []
    for _ in range(int(line.split()[1])):
        t, c = time.perf_counter(), time.process_time()
        loss = step(i)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        i += 1
    print(json.dumps({"times": times, "cpu": cpu, "loss": loss}), flush=True)
"""


class Child:
    def __init__(self, code: str, args: list[str]):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": str(THREADS),
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._expect("ready")

    def _expect(self, word: str) -> None:
        for line in self.proc.stdout:
            if line.strip() == word:
                return
        raise RuntimeError(f"child exited before '{word}' (rc {self.proc.wait()})")

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"child died (rc {self.proc.wait()})")

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    import tempfile

    import numpy as np

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="steps per side per round")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from vishwam_core.analysis import flops_per_token
    from vishwam_core.config import ModelConfig

    cfg = ModelConfig.from_name(args.preset)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, cfg.vocab_size, size=(args.batch * 8, args.seq + 1), dtype=np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/rows.npy"
        np.save(data, rows)
        common = [args.preset, str(args.batch), str(args.seq), "0", data]
        sides = {
            "vishwam": Child(VISHWAM, [*common, args.remat]),
            "transformers": Child(TORCH, [*common, str(THREADS)]),
        }
        times = {k: [] for k in sides}
        cpu = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, child in sides.items():
                r = child.run(args.steps)
                times[name] += r["times"]
                cpu[name] += r["cpu"]
        for child in sides.values():
            child.close()
    # The peak `vishwam pretrain` divides by, measured (and cached) under the same 2 threads.
    peak_proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vishwam_core.analysis import cpu_peak_flops; print(cpu_peak_flops()['flops'])",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    peak = float(peak_proc.stdout.split()[-1])
    tokens = args.batch * args.seq
    train_flops = flops_per_token(cfg, args.seq)["train"]
    result = {
        "config": {"preset": args.preset, "batch": args.batch, "seq_len": args.seq, "threads": THREADS},
        "peak_flops": peak,
    }
    for name, ts in times.items():
        step = float(np.median(ts))
        result[name] = {
            "step_ms": round(step * 1e3, 1),
            "tokens_per_s": round(tokens / step),
            "mfu": round(train_flops * tokens / step / peak, 3),
            "cpu_s_per_step": round(float(np.median(cpu[name])), 3),
            "steps_timed": len(ts),
        }
    result["speedup"] = round(result["vishwam"]["tokens_per_s"] / result["transformers"]["tokens_per_s"], 2)
    # CPU seconds per step: less sensitive than wall time to other load on a shared machine.
    result["cpu_time_ratio"] = round(
        result["transformers"]["cpu_s_per_step"] / result["vishwam"]["cpu_s_per_step"], 2
    )
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in sides:
            r = result[name]
            print(
                f"{name:>13}: {r['tokens_per_s']:>7,} tokens/s  step {r['step_ms']} ms  MFU {r['mfu']:.3f}  "
                f"CPU {r['cpu_s_per_step']} s/step"
            )
        print(
            f"vishwam / transformers: {result['speedup']}x tokens/s, {result['cpu_time_ratio']}x less CPU time "
            f"(peak {peak / 1e9:.0f} GFLOP/s f32, load average {result['load_average'][0]})"
        )


if __name__ == "__main__":
    main()
