"""retain train: fine-tune with one of the methods (see retain.methods)."""

from __future__ import annotations

from retain.commands import add_command
from retain.config import TrainConfig

EPILOG = """examples:
  retain train --model smollm2-135m --method promot --train train.jsonl --validation val.jsonl \\
      --template 'Review: {input}\\nSentiment:' --output runs/sst2-promot
  accelerate launch --multi_gpu --num_processes 2 -m retain train --model tiny-random-llama ... (data parallel; DDP over gloo without a GPU)

Defaults are chosen for ~100M-parameter models on a CPU; the paper's values are given
for comparison. A YAML/JSON file given with --config may set any option by name."""


def add_parser(sub) -> None:
    add_command(sub, "train", TrainConfig, run, help="Fine-tune a model with one of the registered methods (see --method).",
                description=__doc__, epilog=EPILOG, config_file=True, required=("output",))


def run(args) -> None:
    from retain.config import build, read_config_file
    from retain.workflows.train import train

    file_values = read_config_file(args.config) if args.config else None
    cfg = build(TrainConfig, args, file_values, source=f"--config {args.config}")
    out = train(cfg, progress=lambda m: print(m, flush=True))
    print(f"[retain] run written to {out}")
