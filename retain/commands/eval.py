"""``retain eval``: k-shot in-context evaluation of a run or a model on a suite.

For a run with a soft prompt the tuned task is scored with the prompt and every
other task without it (the paper's rule); ``--prompt on|off`` forces either.
"""

from __future__ import annotations

from retain.commands import add_command
from retain.workflows.options import EvalCommand


def add_parser(sub) -> None:
    add_command(sub, "eval", EvalCommand, run, help="k-shot in-context evaluation on a suite (Norm. Avg., format specialization)",
                description=__doc__)


def run(args) -> None:
    from retain.config import build
    from retain.workflows.evaluate import evaluate

    evaluate(build(EvalCommand, args))
