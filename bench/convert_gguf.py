"""Import SmolLM2-135M-Instruct's GGUF: vishwam vs transformers (`from_pretrained(gguf_file=...)`), one run.

Both dequantize the same Q4_1/Q8_0 file to f32. Reports wall time, peak RSS of each (measured in a child
process so the two do not share memory) and their ratio.

    .venv/bin/python bench/convert_gguf.py [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = {
    "vishwam": """
import time, resource, sys
t = time.perf_counter()
from vishwam_core.checkpoint import convert_model
convert_model("smollm2-135m-instruct", sys.argv[1])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""",
    "transformers": """
import time, resource, sys
t = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM
from vishwam_core.checkpoint import find_named_model
p = find_named_model("smollm2-135m-instruct")
m = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""",
}


def run(name: str, out: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD[name], out], capture_output=True, text=True, check=True
    )
    seconds, rss_kb = proc.stdout.split()[-2:]
    return {"seconds": round(float(seconds), 2), "peak_rss_mb": round(int(rss_kb) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        v = run("vishwam", f"{tmp}/out")
        t = run("transformers", f"{tmp}/unused")
    result = {
        "vishwam": v,
        "transformers": t,
        "speedup": round(t["seconds"] / v["seconds"], 2),
        "memory_ratio": round(v["peak_rss_mb"] / t["peak_rss_mb"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("GGUF import, SmolLM2-135M-Instruct -> f32 (incl. imports)")
        print(
            f"  vishwam convert model: {v['seconds']:.1f} s, peak RSS {v['peak_rss_mb']} MB (writes the HF dir too)"
        )
        print(
            f"  transformers gguf load: {t['seconds']:.1f} s, peak RSS {t['peak_rss_mb']} MB (in memory only)"
        )
        print(f"  vishwam is {result['speedup']}x faster; memory ratio {result['memory_ratio']}")


if __name__ == "__main__":
    main()
