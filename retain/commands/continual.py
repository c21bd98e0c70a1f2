"""retain continual: learn tasks one after another (SwitchCIT or a baseline) and measure forgetting."""

from __future__ import annotations

from retain.commands import add_command
from retain.continual.config import ContinualConfig

EPILOG = """examples:
  retain continual --model smollm2-135m --tasks data/simp data/emdg data/hgen --method switchcit --output runs/cit
  retain continual --resume-from runs/cit --tasks data/exp            (adds a task; old adapters untouched)
  retain continual --method arrow --adapters-from runs/cit --base-scores runs/cit --tasks data/simp data/emdg data/hgen \\
      --output runs/arrow      (routes the registry's adapters: nothing trained, the base not scored again)
  retain generate --registry runs/cit "Simplify the following sentence: ..." "Make a title for this article that ..."

Each task folder holds train.jsonl and validation.jsonl (string fields input/output) and
optionally task.json ({"metric": "rouge1", "template": "{input}", "max_new_tokens": 32,
"constraint": false}); --task-config FILE sets the same per task name. After every task,
every task seen so far is evaluated: results.json, results.md, R.png, average.png."""


def add_parser(sub) -> None:
    add_command(sub, "continual", ContinualConfig, run, description=__doc__, epilog=EPILOG, config_file=True, required=("tasks",),
                help="Continual instruction tuning with one of the registered continual methods (see --method).")


def run(args) -> None:
    import shlex
    import sys

    from retain.config import build, read_config_file
    from retain.errors import RetainError
    from retain.workflows.continual import run_continual

    file_values = read_config_file(args.config) if args.config else {}
    model_given = args.model is not None or "model" in file_values
    cfg = build(ContinualConfig, args, file_values, source=f"--config {args.config}")
    tasks = cfg.tasks
    if not tasks:
        raise RetainError("--tasks: give at least one task folder")
    command = "retain " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = run_continual(cfg, list(tasks), progress=lambda m: print(m, flush=True), command=command, model_given=model_given)
    print(f"[retain] results written to {out}")
