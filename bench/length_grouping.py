"""Padded stages: random batches vs --group-by-length.

A stage that pads (encoder-decoder models, ``--no-packing``, a model whose packing check fails) pads
every batch to its longest example; here ``retain train --method prompt --no-packing`` (soft-prompt
stages pack by default since 2026-11-29). Both sides
train the same soft prompt on the same SST-2 examples with the same steps, batch
size and seed; one draws random batches (the default), the other draws batches
of similar length (``--group-by-length``: transformers' LengthGroupedSampler).
The samplers pick different examples, so throughput is real (non-padding)
tokens per second, as counted by the Trainer (``input_tokens`` in run.json).
Sides alternate (A B A B ...); medians are reported.

    python bench/length_grouping.py [--model smollm2-135m --steps 20 --batch-size 8 --repeats 2]

Last line: the throughput ratio grouped / random.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import SHARED, write_result

TEMPLATE = "Review: {input}\nSentiment:"


def side(model_spec, train_file, args, out, grouped: bool) -> dict:
    from retain.config import TrainConfig
    from retain.workflows.train import train

    cfg = TrainConfig(model=model_spec, method="prompt", train=str(train_file), output=str(out), template=TEMPLATE,
                      max_steps=args.steps, batch_size=args.batch_size, prompt_length=args.prompt_length, eval_every=0,
                      save_every=0, log_every=1, seed=args.seed, overwrite=True, group_by_length=grouped,
                      packing=False)  # a padded stage: soft-prompt stages pack by default
    train(cfg, progress=lambda m: None)
    stage = json.loads((out / "run.json").read_text())["stages"][0]
    assert stage["grouped_by_length"] is grouped and not stage["packed"], stage
    return {"seconds": stage["wall_time_s"], "tokens": stage["input_tokens"], "loss": stage["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=20, help="virtual tokens (docs/PERFORMANCE.md's figures: 20)")
    ap.add_argument("--examples", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from retain.data import load_jsonl

    examples = load_jsonl(SHARED / "sst2" / "train.jsonl")[: args.examples]
    runs = {"random": [], "grouped": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_file = tmp / "train.jsonl"
        train_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
        for r in range(args.repeats):
            for name in runs:
                runs[name].append(side(args.model, train_file, args, tmp / f"{name}{r}", name == "grouped"))
            print(f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]['seconds']:.1f}s for {v[-1]['tokens']} tokens"
                                                   for n, v in runs.items()), flush=True)
    tps = {n: statistics.median(x["tokens"] / x["seconds"] for x in v) for n, v in runs.items()}
    ratio = tps["grouped"] / tps["random"]
    write_result("length_grouping", {"model": args.model, "method": "prompt", "steps": args.steps, "batch_size": args.batch_size,
                                     "prompt_length": args.prompt_length, "runs": runs,
                                     "tokens_per_s": {n: round(v, 1) for n, v in tps.items()}, "ratio": round(ratio, 3),
                                     "command": "python bench/length_grouping.py " + " ".join(sys.argv[1:])})
    print(f"prompt tuning, {args.prompt_length} virtual tokens: random batches {tps['random']:.0f} real tokens/s, "
          f"grouped by length {tps['grouped']:.0f}; train loss {runs['random'][-1]['loss']:.3f} vs {runs['grouped'][-1]['loss']:.3f}")
    print(f"length_grouping ratio (grouped / random real tokens/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
