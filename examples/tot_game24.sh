#!/usr/bin/env bash
# Tree of Thoughts on Game of 24 with a model trained here from scratch. docs/tot.md records a run of
# exactly these steps and what each one gave.
#
#   1. solver-made traces in the search's own step format for every solvable puzzle except rows 900-1099
#      of the ToT paper's CSV (900-999: the paper's test set; 1000-1099: the pool for step 5);
#   2. a small BPE, and loss-masked instruct shards from the traces twice: deduplicated (phases 3a-b)
#      and not (phase 3c: dedup unbalances the value records, whose "sure" states recur across puzzles);
#   3. a 3.5M-parameter Llama trained from scratch on the replies only (vishwam pretrain --objective sft)
#      in three phases: 360 steps, 480 more at a lower peak lr, 240 on the undeduplicated shards;
#   4. on the 100 test puzzles: IO, CoT greedy, ToT-BFS (the model proposes AND values; the solver only
#      verifies the final answer), then CoT best-of-k with k = ToT-BFS's mean LM calls per puzzle;
#   5. ToT-BFS over the unseen pool, its verified paths exported as shards, SFT on them (three epochs),
#      and CoT greedy on the test puzzles before and after.
#
# Usage: bash examples/tot_game24.sh [WORK_DIR]
# ~45 min of training on 2 quiet CPU cores (it took 75 min here under load), ~1 h for the rest.
set -euo pipefail
W=${1:-out/tot-game24}
mkdir -p "$W"

echo "== 1. Solver-made traces (rows 900-1099 held out)"
vishwam tot traces "$W/traces.jsonl" --hold-out 900:1100 --force

echo "== 2. A byte-level BPE on the traces, then instruct shards (loss on the replies)"
vishwam convert tokenizer "$W/traces.jsonl" --vocab-size 384 --out "$W/tok" --force
vishwam convert data "$W/traces.jsonl" --format instruct -t "$W/tok" -o "$W/shards" --seq-len 256 --force
vishwam convert data "$W/traces.jsonl" --format instruct -t "$W/tok" -o "$W/shards-all" --seq-len 256 \
  --no-dedup --force

echo "== 3. Train a small model from scratch, in three phases"
cat > "$W/model.json" <<'JSON'
{"name": "tot-game24-4m", "vocab_size": 320, "d_model": 256, "n_layers": 4, "n_heads": 8, "n_kv_heads": 8,
 "head_dim": 32, "ffn_dim": 768, "max_seq_len": 512, "tie_embeddings": true, "rope_theta": 10000.0}
JSON
vishwam pretrain --data "$W/shards" --model "$W/model.json" --objective sft --out "$W/run" --steps 360 \
  --batch-size 16 --lr 1e-3 --warmup-steps 30 --eval-every 60 --log-every 10 --force
vishwam pretrain --data "$W/shards" --init-from "$W/run/model" --objective sft --out "$W/run2" --steps 480 \
  --batch-size 16 --lr 6e-4 --warmup-steps 20 --eval-every 120 --log-every 20 --force
vishwam pretrain --data "$W/shards-all" --init-from "$W/run2/model" --objective sft --out "$W/run3" \
  --steps 240 --batch-size 16 --lr 3e-4 --warmup-steps 10 --eval-every 120 --log-every 20 --force
M="$W/run3/model"
TEST=(--prompts compact --no-chat --range 900:1000)

echo "== 4. The 100 test puzzles: IO, CoT greedy, ToT-BFS, then CoT best-of-k at ToT's LM calls"
vishwam tot "$M" "${TEST[@]}" --method io --out "$W/eval/io" --force
vishwam tot "$M" "${TEST[@]}" --method cot --out "$W/eval/cot" --force
vishwam tot "$M" "${TEST[@]}" --method bfs --breadth 5 --n-evaluate 3 --out "$W/eval/bfs" --force
K=$(python -c "import json,sys; print(max(1, round(json.load(open(sys.argv[1]))['mean_lm_calls'])))" "$W/eval/bfs/summary.json")
vishwam tot "$M" "${TEST[@]}" --method cot --samples "$K" --out "$W/eval/cot-best-of-$K" --force

echo "== 5. ToT-BFS over the unseen pool, SFT on its verified paths, CoT greedy before and after"
vishwam tot "$M" --prompts compact --no-chat --range 1000:1100 --method bfs --breadth 5 --n-evaluate 3 \
  --out "$W/pool/bfs" --export-traces "$W/pool/shards" --force
ROWS=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['splits']['train']['rows'])" "$W/pool/shards/manifest.json")
vishwam pretrain --data "$W/pool/shards" --init-from "$M" --objective sft --out "$W/sft" \
  --steps $(( (3 * ROWS + 3) / 4 )) --batch-size 4 --lr 1e-4 --warmup-steps 1 --force
vishwam tot "$W/sft/model" "${TEST[@]}" --method cot --out "$W/eval/cot-after-sft" --force

python - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1]) / "eval"
print(f"{'method':<22}{'success':>9}{'any':>7}{'LM calls':>10}{'prompt tok':>12}{'gen tok':>9}")
for d in sorted(p for p in w.iterdir() if (p / "summary.json").exists()):
    s = json.loads((d / "summary.json").read_text())
    print(f"{d.name:<22}{s['success']:>9.0%}{s['success_any']:>7.0%}{s['mean_lm_calls']:>10g}"
          f"{s['mean_prompt_tokens']:>12g}{s['mean_completion_tokens']:>9g}")
PY
