"""``retain demo``: what fine-tuning costs, in one command, on the embedded model.

Generates a classification task with a fixed output format (synthetic movie
reviews -> ``positive``/``negative``, ``retain.evaluation.builtin.demo_task``),
then runs ``retain compare`` with base / full / promot on it and the built-in
offline suite (4-shot), prints the table and writes the plots. Rerunning
reuses what is already done.
"""

from __future__ import annotations

from retain.commands import add_command
from retain.workflows.options import DemoOptions


def add_parser(sub) -> None:
    add_command(sub, "demo", DemoOptions, run, description=__doc__,
                help="Fine-tune the embedded model on a built-in task with base/full/promot; print the table, write plots.")


def run(args) -> None:
    from retain.config import build
    from retain.workflows.demo import demo

    demo(build(DemoOptions, args), log=lambda m: print(m, flush=True))
