#!/usr/bin/env bash
# The vishwam quickstart: each phase of the model's life, one command each.
# `make demo` runs this with the project's .venv on PATH.
set -euo pipefail
WORK=${VISHWAM_DEMO_DIR:-out/demo}
mkdir -p "$WORK"

echo "== 1. Import the bundled SmolLM2-135M-Instruct (GGUF) into a Hugging Face model directory"
vishwam convert model smollm2-135m-instruct "$WORK/smollm2" --force

echo "== 2. Analyse it: architecture, exact parameters, FLOPs, memory, training plan"
vishwam analyze "$WORK/smollm2"

echo "== 3. How the published 7B, 32B and 70B models scale"
vishwam analyze --compare llama-2-7b,qwen2.5-32b,llama-2-70b

echo "== 4. Chat with it (greedy, streamed)"
vishwam generate "$WORK/smollm2" --chat "What is the capital of France?" --max-tokens 32

echo "== 5. Turn the interpreter's own standard library source into token shards (SmolLM2's tokenizer)"
STDLIB=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
vishwam convert data "$STDLIB" --tokenizer "$WORK/smollm2" --out "$WORK/stdlib-shards" \
  --include '*.py' --exclude 'site-packages/*' --on-error skip --max-tokens 1000000 --force
vishwam convert inspect "$WORK/stdlib-shards" --samples 1 --chars 300

echo "== 6. Train an 8192-token BPE on the same source and shard it again at 256 tokens per row"
vishwam convert tokenizer "$STDLIB" --include '*.py' --exclude 'site-packages/*' --on-error skip \
  --vocab-size 8192 --max-documents 2000 --out "$WORK/tok8k" --force
vishwam convert data "$STDLIB" --tokenizer "$WORK/tok8k" --out "$WORK/stdlib-8k" \
  --include '*.py' --exclude 'site-packages/*' --on-error skip --seq-len 256 --max-tokens 2000000 --force

echo "== 7. Pretrain the demo preset (5M parameters) on them for a minute: metrics, checkpoints, HF export"
vishwam pretrain --data "$WORK/stdlib-8k" --model demo --out "$WORK/demo-run" \
  --steps 40 --batch-size 8 --warmup-steps 10 --eval-every 20 --force

echo "== 8. Complete code with the freshly trained model"
vishwam generate "$WORK/demo-run/model" --prompt "def " --max-tokens 32

echo "== 9. Tree of Thoughts: a small BFS on one Game-of-24 puzzle (calls and tokens counted), then its tree"
vishwam tot "$WORK/smollm2" --task game24 --range 900:901 --method bfs --breadth 2 --n-evaluate 1 \
  --out "$WORK/tot" --force
vishwam tot show "$WORK/tot/trees/901.json" --html "$WORK/tot/901.html"

echo "== 10. Offline task packs: BIG-bench date understanding (task.json bundled in tests/data) and the example domain pack"
vishwam convert tasks tests/data/bigbench/date_understanding --out "$WORK/tasks/bigbench" --force
vishwam convert tasks examples/domain_pack --out "$WORK/tasks/domain" --force

echo "== 11. Report card: lm-eval tasks through the vishwam backend (30 questions per task, to keep it short)"
# One column per checkpoint: the bundled model and the demo-trained one.
vishwam eval "$WORK/smollm2" "$WORK/demo-run/model" --tasks date_understanding,domain \
  --include-path "$WORK/tasks/bigbench" --include-path "$WORK/tasks/domain" --limit 30 --out "$WORK/eval"
