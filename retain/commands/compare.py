"""``retain compare``: train methods with the same budget, evaluate all, table + plots.

Every training option of ``retain train`` applies to every method (one budget):
``--max-steps`` for single-stage methods, ``--stage1-steps``/``--stage2-steps``
for promot. Results: DIR/results.md (rows = tasks, columns = methods),
results.json, tradeoff.png, tasks.png. Rerun the same command to resume.
"""

from __future__ import annotations

import argparse

from retain.config import TrainConfig, add_arguments

EPILOG = """example:
  retain compare --model smollm2-135m --train train.jsonl --validation val.jsonl \\
      --template 'Review: {input}\\nSentiment:' --suite builtin \\
      --methods base,prompt,full,lora,promot,promot-1shot,wise-ft --output runs/compare

methods: base (untrained), full, prompt, lora, promot, joint, NAME-1shot (with --one-shot),
wise-ft ((1-a) base + a full, at --wise-alphas; post-hoc, no training)."""


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="Train several methods with one budget and compare them on the tuned task and a suite.",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of training options; flags win.")
    p.add_argument("--methods", default="base,full,promot", help="comma-separated methods (default: base,full,promot)")
    p.add_argument("--wise-alphas", default="0.25,0.5,0.75", help="interpolation weights for wise-ft (default: 0.25,0.5,0.75)")
    p.add_argument("--tuned-examples", type=int, default=200, metavar="N", help="validation items scored for the tuned task (default: 200)")
    p.add_argument("--title", default="Comparison", help="title of results.md")
    p.add_argument("--seeds", type=int, default=1, metavar="S",
                   help="train every trained method S times (seeds --seed .. --seed+S-1); the intervals include that variance (default: 1)")
    from retain.commands.eval import add_eval_arguments

    add_eval_arguments(p, batch=False)
    add_arguments(p, TrainConfig, skip=("method", "one_shot", "resume", "seed"),
                  required=("train", "validation", "output"))
    p.set_defaults(func=run)


def run(args) -> None:
    from retain.commands.eval import parse_shots
    from retain.config import build, read_config_file
    from retain.errors import RetainError
    from retain.evaluation.compare import compare, parse_alphas, parse_methods

    methods = parse_methods(args.methods)
    alphas = parse_alphas(args.wise_alphas)
    shots = parse_shots(args.shots)
    if args.examples is not None and args.examples <= 0:
        raise RetainError(f"--examples must be positive, got {args.examples}")
    if args.tuned_examples <= 0:
        raise RetainError(f"--tuned-examples must be positive, got {args.tuned_examples}")
    if args.trials <= 0 or args.seeds <= 0:
        raise RetainError(f"--trials and --seeds must be positive, got {args.trials} and {args.seeds}")
    file_values = read_config_file(args.config) if args.config else None
    cfg = build(TrainConfig, args, file_values, source=f"--config {args.config}", seed=args.seed)
    for flag in ("train", "validation", "output"):
        if not getattr(cfg, flag):
            raise RetainError(f"--{flag} is required")
    from pathlib import Path

    results = compare(cfg, methods=methods, suite=args.suite, shots=shots, examples=args.examples,
                      tuned_examples=args.tuned_examples, out=Path(cfg.output), seed=args.seed, wise_alphas=alphas,
                      overwrite=bool(cfg.overwrite), batch_size=cfg.eval_batch_size, title=args.title,
                      log=lambda m: print(m, flush=True), trials=args.trials, seeds=args.seeds)
    from retain.evaluation.report import comparison_table, paired_table

    for k in shots:
        print(f"\n{k}-shot")
        print(comparison_table(results, k))
        print()
        print(paired_table(results, k))
    print(f"\n[retain] results in {cfg.output}/results.md, plots {cfg.output}/tradeoff.png, {cfg.output}/tasks.png")
