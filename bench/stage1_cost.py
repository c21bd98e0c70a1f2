"""Stage 1 cost: a prompt-tuning step vs a full fine-tuning step on the same batch.

Stage 1 trains only the soft prompt: autograd still runs backward through every
layer (to reach the prompt) but computes no weight gradients and the optimizer
updates p x d numbers instead of the whole model. Both steps are the engine's
own (selective-logit loss, AdamW), on the same padded SST-2 batch.

    python bench/stage1_cost.py [--model smollm2-135m --batch-size 8 --steps 5]

Last line: the ratio prompt step / full step (target <= 0.75).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import sst2_rows, step_timer, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from retain.config import TrainConfig
    from retain.methods import wrap
    from retain.models import load_model

    loaded = load_model(args.model)
    rows = sst2_rows(loaded.tokenizer, args.batch_size)
    cfg = TrainConfig(model=args.model, prompt_length=args.prompt_length)
    model = wrap(loaded.model, loaded.tokenizer, "promot", cfg, loaded.is_seq2seq)
    prompt_step = step_timer(model, loaded.tokenizer, "prompt", lr=3e-2)
    full_step = step_timer(model, loaded.tokenizer, "model")  # same model, prompt attached and frozen: same batch shape
    prompt_s, full_s = [], []
    for _ in range(args.repeats):  # alternate the sides
        prompt_s.append(prompt_step(rows, args.steps))
        full_s.append(full_step(rows, args.steps))
    p, f = min(prompt_s), min(full_s)
    result = {"model": args.model, "batch_size": args.batch_size, "prompt_length": args.prompt_length,
              "prompt_step_s": prompt_s, "full_step_s": full_s, "ratio": round(p / f, 3),
              "command": "python bench/stage1_cost.py " + " ".join(sys.argv[1:])}
    write_result("stage1_cost", result)
    print(f"prompt-tuning step {p:.3f}s, full fine-tuning step {f:.3f}s (best of {args.repeats} x {args.steps} steps)")
    print(f"stage1_cost ratio (prompt step / full step): {p / f:.2f}x")


if __name__ == "__main__":
    main()
