"""retain train: fine-tune with one of the methods (see retain.methods)."""

from __future__ import annotations

import argparse

from retain.config import TrainConfig, add_arguments

EPILOG = """examples:
  retain train --model smollm2-135m --method promot --train train.jsonl --validation val.jsonl \\
      --template 'Review: {input}\\nSentiment:' --output runs/sst2-promot
  accelerate launch --cpu --num_processes 2 -m retain train --model tiny-random-llama ... (data parallel)

Defaults are chosen for ~100M-parameter models on a CPU; the paper's values are given
for comparison. A YAML/JSON file given with --config may set any option by name."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="Fine-tune a model (full, prompt, lora, promot, joint).", description=__doc__,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (flag names with _ or -); flags given on the command line win.")
    add_arguments(p, TrainConfig, required=("train", "output"))
    p.set_defaults(func=run)


def run(args) -> None:
    from retain.config import build, read_config_file
    from retain.train import train

    file_values = read_config_file(args.config) if args.config else None
    cfg = build(TrainConfig, args, file_values, source=f"--config {args.config}")
    out = train(cfg, progress=lambda m: print(m, flush=True))
    print(f"[retain] run written to {out}")
