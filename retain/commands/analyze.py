"""``retain analyze``: the analyses the ProMoT paper draws its conclusions from, measured while methods train.

  format-curve  every N steps of training: the format-specialization rate and Norm. Avg. on the suite
                (without the soft prompt) and the tuned-task score (with it), ± SE (the paper's Fig. 2)
  gradients     every K steps of each stage that trains the weights: the cosine between the gradient on
                the real task and on the same batches with labels shuffled, per module of the last block
                (Q, K, V, MLP), the block and overall (the paper's Fig. 3)

Every method of --methods is trained with one budget (every 'retain train' option applies to all), through
the training workflow itself, without checkpoint selection. DIR holds results.json, results.md and a plot.
"""

from __future__ import annotations

import argparse

from retain.commands import add_command
from retain.config import TrainConfig, add_arguments
from retain.workflows.options import CurveOptions, GradientOptions

UNUSED = ("method", "one_shot", "resume", "eval_every", "eval_samples", "save_every", "num_beams", "tasks")  # set per method, or not used
# (num_beams: format-curve takes the evaluation's --num-beams; gradients decodes nothing; tasks: one tuned task, and
# --tasks picks suite tasks here)

CURVE_EPILOG = """example:
  retain analyze format-curve --model smollm2-135m --train rte/train.jsonl --validation rte/validation.jsonl \\
      --template '{input}\\nIs it true or false? answer:' --suite builtin --shots 1 --examples 100 \\
      --methods full,promot --max-steps 300 --stage1-steps 300 --stage2-steps 300 --every 50 --output runs/curve

The x axis: a method's last stage from 0 to its steps, earlier stages before 0 (ProMoT's stage 1 at
-stage1_steps .. 0, stage 2 at 0 .. stage2_steps): full FT and ProMoT stage 2 at equal model-tuning steps."""

GRADIENT_EPILOG = """example:
  retain analyze gradients --model smollm2-135m --train rte/train.jsonl \\
      --template '{input}\\nIs it true or false? answer:' --methods full,promot \\
      --max-steps 400 --stage2-steps 400 --every 50 --probe-batches 4 --output runs/gradients

Module groups are found per model family (llama-style q_proj/k_proj/v_proj/mlp, GPT-2's fused c_attn split
in thirds and mlp, T5's decoder q/k/v/DenseReluDense); results.md names the modules used."""


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="The paper's analyses: format-specialization curve, gradient cosines.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inner = p.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=type(p))
    inner.required = True
    c = add_command(inner, "format-curve", CurveOptions, run_curve, epilog=CURVE_EPILOG, config_file=True,
                    help="Format-specialization rate, Norm. Avg. and tuned-task score against the training step.",
                    description="Every N steps of training each method: the suite's format-specialization rate and "
                                "Norm. Avg. (scored without the soft prompt) and the tuned-task score (with it), ± SE.")
    add_arguments(c, TrainConfig, skip=UNUSED + ("seed",), required=("train", "validation", "output"))
    g = add_command(inner, "gradients", GradientOptions, run_gradients, epilog=GRADIENT_EPILOG, config_file=True,
                    help="Cosine between the gradient on the real task and on shuffled labels, against the step.",
                    description="Every K steps of each stage that trains the model's weights: the cosine between the "
                                "training-loss gradient on probe batches and on the same batches with their outputs "
                                "permuted among the examples, per module of the last block and overall.")
    add_arguments(g, TrainConfig, skip=UNUSED + ("validation",), required=("train", "output"))


def _train_config(args, **overrides):
    from retain.config import build, read_config_file, require_one_task

    file_values = read_config_file(args.config) if args.config else None
    # --tasks here picks suite tasks (CurveOptions), not retain train's several tuned tasks
    train_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "tasks"})
    cfg = build(TrainConfig, train_args, file_values, source=f"--config {args.config}", **overrides)
    require_one_task(cfg, f"analyze {args.analysis}")
    return cfg


def run_curve(args) -> None:
    from retain.config import build
    from retain.workflows.analyze import format_curve

    opts = build(CurveOptions, args)
    cfg = _train_config(args, seed=opts.seed)
    format_curve(cfg, opts, log=lambda m: print(m, flush=True))
    print(f"\n[retain] results in {cfg.output}/results.md, plot {cfg.output}/format_curve.png")


def run_gradients(args) -> None:
    from retain.config import build
    from retain.workflows.analyze import gradients

    opts = build(GradientOptions, args)
    cfg = _train_config(args)
    gradients(cfg, opts, log=lambda m: print(m, flush=True))
    print(f"\n[retain] results in {cfg.output}/results.md, plot {cfg.output}/gradients.png")
