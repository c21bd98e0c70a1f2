"""``retain demo``: what fine-tuning costs, in one command, on the embedded model.

Generates a classification task with a fixed output format (synthetic movie
reviews -> ``positive``/``negative``, ``retain.evaluation.builtin.demo_task``),
then runs ``retain compare`` with base / full / promot on it and the built-in
offline suite (4-shot), prints the table and writes the plots. Rerunning
reuses what is already done.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="Fine-tune the embedded model on a built-in task with base/full/promot; print the table, write plots.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model spec (default: smollm2-135m, the embedded default)")
    p.add_argument("--output", default="runs/demo", help="comparison directory (default: runs/demo)")
    p.add_argument("--methods", default="base,full,promot", help="methods (default: base,full,promot)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per training stage, every method (default: 30)")
    p.add_argument("--lr", type=float, default=1e-4, help="model learning rate (full FT and promot stage 2; default: 1e-4)")
    p.add_argument("--examples", type=int, default=100,
                   help="test items per suite task (default: 100, so that each task's standard error is at most 5 points)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of reusing an earlier demo in --output")
    p.set_defaults(func=run)


def run(args) -> None:
    import time
    from pathlib import Path

    from retain.config import TrainConfig
    from retain.errors import RetainError
    from retain.evaluation.builtin import DEMO_TEMPLATE, demo_task
    from retain.evaluation.compare import compare, parse_methods
    from retain.evaluation.report import comparison_table, paired_table

    if args.steps <= 0 or args.examples <= 0 or args.lr <= 0:
        raise RetainError("--steps, --examples and --lr must be positive")
    methods = parse_methods(args.methods)
    t0 = time.time()
    out = Path(args.output)
    data = out.parent / f".{out.name}.data"
    data.mkdir(parents=True, exist_ok=True)
    import json

    for name, rows in (("train", demo_task(400, seed=7)), ("validation", demo_task(100, seed=8))):
        path = data / f"{name}.jsonl"
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    cfg = TrainConfig(model=args.model, train=str(data / "train.jsonl"), validation=str(data / "validation.jsonl"),
                      output=str(out), template=DEMO_TEMPLATE, max_steps=args.steps, stage1_steps=args.steps,
                      stage2_steps=args.steps, lr=args.lr, stage2_lr=args.lr, eval_every=0, max_length=64, batch_size=8,
                      save_every=0, log_every=10)
    print(f"[demo] task: synthetic reviews -> positive/negative, template {DEMO_TEMPLATE!r}; methods {','.join(methods)}; "
          f"{args.steps} steps per stage at lr {args.lr:g}; suite: builtin, 4-shot, {args.examples} items per task", flush=True)
    results = compare(cfg, methods=methods, suite="builtin", shots=[4], examples=args.examples, tuned_examples=100,
                      out=out, seed=0, overwrite=args.overwrite, batch_size=32, title="retain demo",
                      tuned_name="demo-sentiment", log=lambda m: print(m, flush=True))
    print()
    print(comparison_table(results, 4))
    print()
    print(paired_table(results, 4))
    print(f"\n[demo] done in {time.time() - t0:.0f}s; table {out}/results.md, plots {out}/tradeoff.png and {out}/tasks.png")
