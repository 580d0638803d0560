"""Tokenize the Python standard library's source: `vishwam convert data` vs Hugging Face `datasets`, one run.

Corpus: every `*.py` under `sysconfig.get_paths()['stdlib']` outside site-packages (~31.5 MB, 1790 files;
4 deliberately mis-encoded test files are skipped by both). Tokenizer: SmolLM2-135M-Instruct's, built by
`vishwam convert model` (or `--tokenizer DIR`).

- vishwam: `convert_data` end to end: read, hash, dedup, split, tokenize, pack into 1025-token rows,
  write zstd Parquet shards + manifest (`--on-error skip`).
- datasets: read the same files, `Dataset.from_dict`, then `Dataset.map(batched=True, num_proc=2)` with
  the same tokenizer's `encode_batch_fast` (the faster of its two batch encoders), writing no shards.

Each side runs in its own child process, alternating (vishwam, datasets, vishwam, ...) `--repeat` times
with the best run of each kept, since the 2 cores are shared with other jobs; tokens/s counts the tokens
each produced (vishwam's include one EOS per document), wall time excludes interpreter start and imports. Peak RSS is the child's (for
datasets, the larger of the parent and its map workers). vishwam is then rerun on the corpus doubled (a
second copy with one line prepended to every file, so deduplication keeps it) to show memory is flat.

    .venv/bin/python bench/convert.py [--tokenizer DIR] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

STDLIB = sysconfig.get_paths()["stdlib"]

VISHWAM = """
import json, resource, sys, time
from vishwam_core.data import convert_data
tokenizer, out, *sources = sys.argv[1:]
me = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = me.ru_utime + me.ru_stime
t = time.perf_counter()
s = convert_data(sources, tokenizer, out, include=["*.py"], exclude=["site-packages/*"], on_error="skip")
seconds = time.perf_counter() - t
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "tokens": s["tokens"], "documents": s["documents"]["kept"],
                  "cpu_seconds": me.ru_utime + me.ru_stime - cpu0, "peak_rss_mb": me.ru_maxrss / 1024}))
"""

DATASETS = """
import json, resource, sys, time
from pathlib import Path
from datasets import Dataset, disable_progress_bars
from tokenizers import Tokenizer
disable_progress_bars()
tokenizer, root = sys.argv[1:]
tok = Tokenizer.from_file(tokenizer + "/tokenizer.json")

def encode(batch):
    return {"input_ids": [e.ids for e in tok.encode_batch_fast(batch["text"], add_special_tokens=False)]}

me = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = me.ru_utime + me.ru_stime
t = time.perf_counter()
texts = []
for p in sorted(Path(root).rglob("*.py")):
    if "site-packages" in p.relative_to(root).parts:
        continue
    try:
        texts.append(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        pass
ds = Dataset.from_dict({"text": texts}).map(encode, batched=True, num_proc=2, remove_columns=["text"])
tokens = sum(len(ids) for ids in ds["input_ids"])
seconds = time.perf_counter() - t
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime - cpu0 + kids.ru_utime + kids.ru_stime
print(json.dumps({"seconds": seconds, "tokens": tokens, "documents": len(texts), "cpu_seconds": cpu,
                  "peak_rss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024}))
"""


def child(code: str, *args: str) -> dict:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"bench child failed:\n{proc.stderr}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["tokens_per_second"] = round(r["tokens"] / r["seconds"])
    r["tokens_per_cpu_second"] = round(r["tokens"] / r["cpu_seconds"])
    r["cpu_seconds"] = round(r["cpu_seconds"], 2)
    r["seconds"] = round(r["seconds"], 2)
    r["peak_rss_mb"] = round(r["peak_rss_mb"])
    return r


def corpus_bytes() -> int:
    root = Path(STDLIB)
    return sum(
        p.stat().st_size for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts
    )


def make_second_copy(dst: Path) -> None:
    root = Path(STDLIB)
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if "site-packages" in rel.parts:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"# second copy\n" + p.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--tokenizer", help="A model directory with tokenizer.json (default: build SmolLM2's)."
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="Runs of each side, alternating; the best is kept."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = args.tokenizer
        if tokenizer is None:
            from vishwam_core.checkpoint import convert_model

            tokenizer = f"{tmp}/smollm2"
            convert_model("smollm2-135m-instruct", tokenizer)
        mb = corpus_bytes() / 1e6
        runs_v, runs_d = [], []
        for i in range(args.repeat):
            runs_v.append(child(VISHWAM, tokenizer, f"{tmp}/shards{i}", STDLIB))
            runs_d.append(child(DATASETS, tokenizer, STDLIB))
        v = max(runs_v, key=lambda r: r["tokens_per_second"])
        d = max(runs_d, key=lambda r: r["tokens_per_second"])
        make_second_copy(Path(tmp) / "copy2")
        v2 = child(VISHWAM, tokenizer, f"{tmp}/shards2", STDLIB, f"{tmp}/copy2")
    result = {
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "corpus_mb": round(mb, 1),
        "vishwam": v,
        "datasets": d,
        "speedup": round(v["tokens_per_second"] / d["tokens_per_second"], 2),
        "all_runs_tokens_per_second": {
            "vishwam": [r["tokens_per_second"] for r in runs_v],
            "datasets": [r["tokens_per_second"] for r in runs_d],
        },
        "cpu_efficiency_ratio": round(v["tokens_per_cpu_second"] / d["tokens_per_cpu_second"], 2),
        "vishwam_doubled_corpus": v2,
        "rss_growth_when_doubled": round(v2["peak_rss_mb"] / v["peak_rss_mb"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Tokenize the stdlib source ({mb:.1f} MB of .py) with the SmolLM2 tokenizer, 2 workers each")
    print(
        f"  vishwam convert data : {v['seconds']:6.1f} s  {v['tokens']:>10,} tokens  {v['tokens_per_second']:>9,} tokens/s"
        f"  peak RSS {v['peak_rss_mb']} MB  (read, tokenize, pack, write Parquet)"
    )
    print(
        f"  datasets map (np=2)  : {d['seconds']:6.1f} s  {d['tokens']:>10,} tokens  {d['tokens_per_second']:>9,} tokens/s"
        f"  peak RSS {d['peak_rss_mb']} MB  (read, tokenize; no writing)"
    )
    print(
        f"  vishwam is {result['speedup']}x datasets in tokens/s, {result['cpu_efficiency_ratio']}x in tokens per "
        f"CPU-second ({v['tokens_per_cpu_second']:,} vs {d['tokens_per_cpu_second']:,})"
    )
    print(
        f"  corpus doubled       : {v2['seconds']:6.1f} s  {v2['tokens']:>10,} tokens  {v2['tokens_per_second']:>9,} tokens/s"
        f"  peak RSS {v2['peak_rss_mb']} MB ({result['rss_growth_when_doubled']}x the single corpus)"
    )
    runs = result["all_runs_tokens_per_second"]
    print(f"  every run, tokens/s: vishwam {runs['vishwam']}, datasets {runs['datasets']}")
    print(
        f"  load average (1 min) before/after: {load_before:.2f} / {result['load_average'][1]:.2f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
