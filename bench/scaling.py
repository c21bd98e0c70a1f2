"""Scaling: step time as the sequence length doubles, and as the soft-prompt length doubles.

A full fine-tuning step on batches of fixed-length sequences (64, 128, 256, 512
tokens) and a prompt-tuning step at 128 tokens with prompts of 10..160 virtual
tokens. For a model this size the cost is dominated by the per-token matmuls, so
a doubling should cost at most ~2x (attention adds a quadratic term that grows
with length); the table shows each step's ratio to the previous one.

    python bench/scaling.py [--model smollm2-135m --batch-size 4 --steps 3]

Last line: the largest ratio seen for one doubling.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import step_timer, write_result


def rows_of_length(n: int, length: int, vocab: int, answer: int = 2) -> list[dict]:
    import random

    r = random.Random(length)
    rows = []
    for _ in range(n):
        ids = [r.randrange(10, vocab) for _ in range(length)]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": [-100] * (length - answer) + ids[-answer:]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lengths", default="64,128,256,512")
    ap.add_argument("--prompt-lengths", default="10,20,40,80,160")
    args = ap.parse_args()

    from retain.config import TrainConfig
    from retain.methods import wrap
    from retain.models import load_model

    loaded = load_model(args.model)
    vocab = loaded.model.get_input_embeddings().num_embeddings
    full = step_timer(loaded.model, loaded.tokenizer, "model")
    seq = []
    for length in map(int, args.lengths.split(",")):
        seq.append({"tokens": length, "step_s": round(full(rows_of_length(args.batch_size, length, vocab), args.steps), 4)})
    prm = []
    rows = rows_of_length(args.batch_size, 128, vocab)
    for p in map(int, args.prompt_lengths.split(",")):
        base = load_model(args.model)
        model = wrap(base.model, base.tokenizer, "prompt", TrainConfig(model=args.model, prompt_length=p), base.is_seq2seq)
        prm.append({"prompt_length": p, "step_s": round(step_timer(model, base.tokenizer, "prompt", lr=3e-2)(rows, args.steps), 4)})
    for table in (seq, prm):
        for prev, cur in itertools.pairwise(table):
            cur["ratio_to_previous"] = round(cur["step_s"] / prev["step_s"], 2)
    worst = max(r["ratio_to_previous"] for t in (seq, prm) for r in t[1:])
    write_result("scaling", {"model": args.model, "batch_size": args.batch_size, "sequence_length": seq,
                             "prompt_length": prm, "worst_doubling_ratio": worst,
                             "command": "python bench/scaling.py " + " ".join(sys.argv[1:])})
    print("| sequence tokens | full step s | x previous |\n|---|---|---|")
    for r in seq:
        print(f"| {r['tokens']} | {r['step_s']:.3f} | {r.get('ratio_to_previous', '')} |")
    print("| prompt tokens (seq 128) | prompt step s | x previous |\n|---|---|---|")
    for r in prm:
        print(f"| {r['prompt_length']} | {r['step_s']:.3f} | {r.get('ratio_to_previous', '')} |")
    print(f"scaling: worst step-time ratio for one doubling: {worst:.2f}x")


if __name__ == "__main__":
    main()
