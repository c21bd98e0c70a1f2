"""``retain compare``: train methods with the same budget, evaluate all, table + plots.

Every training option of ``retain train`` applies to every method (one budget):
``--max-steps`` for single-stage methods, ``--stage1-steps``/``--stage2-steps``
for promot. Results: DIR/results.md (rows = tasks, columns = methods),
results.json, tradeoff.png, tasks.png (with --sweep: every method at every value, and each method's
frontier in frontier.md, frontier.png). Rerun the same command to resume.
"""

from __future__ import annotations

from retain.commands import add_command
from retain.config import TrainConfig, add_arguments
from retain.workflows.options import CompareOptions

EPILOG = """example:
  retain compare --model smollm2-135m --train train.jsonl --validation val.jsonl \\
      --template 'Review: {input}\\nSentiment:' --suite builtin \\
      --methods base,prompt,full,lora,promot,promot-1shot,wise-ft --output runs/compare

methods: base (untrained), every method of 'retain train --method', NAME-1shot (with --one-shot),
wise-ft ((1-a) base + a full, at --wise-alphas) and lines (full's update scaled by layer depth, at --lines-alphas
and --lines-beta): post-hoc, no training. Every suite task at 1 and 4 shots unless --shots says otherwise."""


def add_parser(sub) -> None:
    p = add_command(sub, "compare", CompareOptions, run, description=__doc__, epilog=EPILOG, config_file=True,
                    help="Train several methods with one budget and compare them on the tuned task and a suite.")
    add_arguments(p, TrainConfig, skip=("method", "one_shot", "resume", "seed", "num_beams"), required=("train", "validation", "output"))


def run(args) -> None:
    from pathlib import Path

    from retain.config import build, read_config_file, require_one_task
    from retain.distributed import is_main
    from retain.errors import RetainError
    from retain.evaluation.report import comparison_table, paired_table
    from retain.workflows.compare import compare, parse_alphas, parse_methods

    opts = build(CompareOptions, args)
    parse_methods(opts.methods)
    parse_alphas(opts.wise_alphas)
    parse_alphas(opts.lines_alphas, "--lines-alphas")
    shots = opts.shot_counts()
    file_values = read_config_file(args.config) if args.config else None
    cfg = build(TrainConfig, args, file_values, source=f"--config {args.config}", seed=opts.seed)
    for flag in ("train", "validation", "output"):
        if not getattr(cfg, flag):
            raise RetainError(f"--{flag} is required")
    require_one_task(cfg, "compare")
    results = compare(cfg, opts, out=Path(cfg.output), log=lambda m: print(m, flush=True))
    if not is_main():  # under a launch of N processes the main one reports
        return
    for k in shots:
        print(f"\n{k}-shot")
        print(comparison_table(results, k))
        print()
        print(paired_table(results, k))
    print(f"\n[retain] results in {cfg.output}/results.md, plots {cfg.output}/tradeoff.png, {cfg.output}/tasks.png")
