"""retain continual: learn tasks one after another (SwitchCIT or a baseline) and measure forgetting."""

from __future__ import annotations

import argparse

from retain.config import add_arguments
from retain.continual.config import ContinualConfig

EPILOG = """examples:
  retain continual --model smollm2-135m --tasks data/simp data/emdg data/hgen --method switchcit --output runs/cit
  retain continual --resume-from runs/cit --tasks data/exp            (adds a task; old adapters untouched)
  retain generate --registry runs/cit "Simplify the following sentence: ..." "Make a title for this article that ..."

Each task folder holds train.jsonl and validation.jsonl (string fields input/output) and
optionally task.json ({"metric": "rouge1", "template": "{input}", "max_new_tokens": 32,
"constraint": false}); --task-config FILE sets the same per task name. After every task,
every task seen so far is evaluated: results.json, results.md, R.png, average.png."""


def add_parser(sub) -> None:
    p = sub.add_parser("continual", help="Continual instruction tuning: switchcit, sequential, sequential-lora, replay, multitask.",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of options; flags given on the command line win.")
    p.add_argument("--tasks", nargs="+", metavar="DIR", help="Task folders, learnt in this order [required].")
    add_arguments(p, ContinualConfig)
    p.set_defaults(func=run)


def run(args) -> None:
    import shlex
    import sys

    from retain.config import build, read_config_file
    from retain.continual.methods import run_continual
    from retain.errors import RetainError

    file_values = read_config_file(args.config) if args.config else {}
    tasks = args.tasks or file_values.pop("tasks", None)
    if not tasks:
        raise RetainError("--tasks: give at least one task folder")
    model_given = args.model is not None or "model" in file_values
    cfg = build(ContinualConfig, args, file_values, source=f"--config {args.config}")
    command = "retain " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = run_continual(cfg, list(tasks), progress=lambda m: print(m, flush=True), command=command, model_given=model_given)
    print(f"[retain] results written to {out}")
