#!/usr/bin/env bash
# Every benchmark, side by side with its peer. Results are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/convert_gguf.py
python bench/decode.py
python bench/convert.py
python bench/train.py
python bench/eval.py
