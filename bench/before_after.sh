#!/bin/bash
# Before/after of the engine's performance changes: the same `retain train --method full`
# at commit 249d7ed (before) and at HEAD, plus HEAD without fused AdamW and without packing.
# Usage (repo root): bash bench/before_after.sh   (needs ../shared/data; makes a git worktree in /tmp)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
before=/tmp/retain-before-249d7ed
[ -d "$before" ] || git -C "$root" worktree add -q "$before" 249d7ed
head -800 "$root/../shared/data/sst2/train.jsonl" > /tmp/sst2-800.jsonl
export OMP_NUM_THREADS=1
ARGS=(train --model smollm2-135m --method full --train /tmp/sst2-800.jsonl --template 'Review: {input}\nSentiment:'
      --max-steps 16 --batch-size 8 --eval-every 0 --save-every 0 --log-every 1 --overwrite)
run() { # name dir extra...
  local name=$1 dir=$2; shift 2
  (cd "$dir" && python -m retain "${ARGS[@]}" --output "/tmp/retain-ba/$name" "$@" > "/tmp/retain-ba/$name.log" 2>&1)
  python -c "import json;i=json.load(open('/tmp/retain-ba/$name/run.json'));s=i['stages'][0];print('$name', s['wall_time_s'], 'loss', s['train_loss'], 'packed', s.get('packed'), i['config']['optim'])"
}
mkdir -p /tmp/retain-ba
for r in 1 2; do
  run before$r "$before"
  run after$r "$root"
  run after_foreach$r "$root" --optim adamw_torch
  run after_nopack$r "$root" --no-packing
done
