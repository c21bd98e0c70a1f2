"""Options of the evaluation commands as data classes; every command's flags are generated from them
(``retain.config.add_arguments``). ``EvalOptions`` is the one set of suite-scoring options shared by
``retain eval`` and ``retain compare``."""

from __future__ import annotations

from dataclasses import dataclass

from retain.config import ENGINES, PROMPT_RULES, opt
from retain.errors import RetainError
from retain.models import DTYPES


def parse_shots(text) -> list[int]:
    if isinstance(text, (list, tuple)):
        text = ",".join(str(s) for s in text)
    try:
        shots = [int(s) for s in str(text).split(",") if s.strip() != ""]
    except ValueError:
        raise RetainError(f"--shots: expected comma-separated integers like 1,4, got '{text}'") from None
    if not shots or any(s < 0 for s in shots):
        raise RetainError(f"--shots: expected non-negative integers like 1,4, got '{text}'")
    return list(dict.fromkeys(shots))


@dataclass
class EvalOptions:
    """How the suite and the tuned task are scored (``retain eval`` and ``retain compare``)."""

    suite: str = opt("builtin", "'builtin', a folder of task .jsonl files, or a suite .yaml.")
    shots: str = opt("4", "Comma-separated shot counts, e.g. 1,4; a YAML task's own 'shots' wins.")
    examples: int | None = opt(None, "Test items per suite task (default: 50, or the YAML's).", positive=True, metavar="N")
    seed: int = opt(0, "Seed for picking test items and demonstrations (and, in compare, for training).")
    trials: int = opt(1, "Draws of demonstrations (and of test items, where a task has more rows than it scores), HELM-style; "
                         "draw t uses seed --seed + t; scores are their mean and the standard error includes their variance.",
                      positive=True, metavar="K")
    engine: str = opt("fast", "fast: batched, shared few-shot prefix computed once; simple: one prompt at a time (reference).",
                      choices=ENGINES)
    tuned_examples: int = opt(200, "Tuned-task validation items scored (the first N).", positive=True, metavar="N")

    def shot_counts(self) -> list[int]:
        return parse_shots(self.shots)


@dataclass
class EvalCommand(EvalOptions):
    """``retain eval``."""

    run: str | None = opt(None, "A run directory written by 'retain train'.", metavar="DIR", group="source")
    model: str | None = opt(None, "A model spec (alias, .gguf, directory, Hub id).", metavar="MODEL", group="source")
    prompt: str = opt("auto", "Soft prompt use: auto = tuned task with it, other tasks without (paper); on = everywhere; "
                              "off = nowhere.", choices=PROMPT_RULES)
    tuned_data: str | None = opt(None, "JSONL of the tuned task to score in its own format (default: the run's --validation file).",
                                 metavar="FILE")
    task: str | None = opt(None, "With --run trained on several tasks: the task scored as the tuned one, with its format and its "
                                 "soft prompt (required for such a run).", metavar="NAME")
    batch_size: int = opt(32, "Rows per forward pass.", positive=True, metavar="N")
    output: str | None = opt(None, "Write the full results as JSON here.", metavar="FILE")
    trust_remote_code: bool = opt(False, "Allow model code from the Hub (runs that code).")
    allow_pickle: bool = opt(False, "Allow pickle (.bin/.pt) weights.")
    dtype: str = opt("float32", "With --model: the dtype the model is loaded and evaluated in (a run is evaluated in its own).",
                     choices=DTYPES)


@dataclass
class CompareOptions(EvalOptions):
    """``retain compare``'s own options (the training options are ``TrainConfig``'s)."""

    methods: str = opt("base,full,promot", "Comma-separated methods: base (untrained), any registered method, NAME-1shot "
                                           "(with --one-shot), wise-ft.")
    wise_alphas: str = opt("0.25,0.5,0.75", "Interpolation weights for wise-ft.")
    title: str = opt("Comparison", "Title of results.md.")
    seeds: int = opt(1, "Train every trained method S times (seeds --seed .. --seed+S-1); the intervals include that variance.",
                     positive=True, metavar="S")


@dataclass
class DemoOptions:
    """``retain demo``."""

    model: str = opt("smollm2-135m", "Model spec (the embedded default).")
    output: str = opt("runs/demo", "Comparison directory.")
    methods: str = opt("base,full,promot", "Methods.")
    steps: int = opt(30, "Optimizer steps per training stage, every method.", positive=True)
    lr: float = opt(1e-4, "Model learning rate (full FT and promot stage 2).", positive=True)
    examples: int = opt(100, "Test items per suite task (so that each task's standard error is at most 5 points).", positive=True)
    overwrite: bool = opt(False, "Start over instead of reusing an earlier demo in --output.")


@dataclass
class GenerateOptions:
    """``retain generate``."""

    run: str | None = opt(None, "Run directory written by 'retain train'.", metavar="DIR", group="source")
    registry: str | None = opt(None, "SwitchCIT registry written by 'retain continual --method switchcit': each input is routed to "
                                     "its task's adapter; mixed tasks are generated in one pass.", metavar="DIR", group="source")
    base: str | None = opt(None, "With --registry: the base model to load (default: the one recorded); its weights must match "
                                 "the recorded hash.", metavar="MODEL")
    show_task: bool = opt(False, "With --registry: prefix each output with the task it was routed to and a tab.")
    no_prompt: bool = opt(False, "Drop the soft prompt (and the one-shot prefix): the fine-tuned model as is, for tasks other "
                                 "than the tuned one.")
    raw: bool = opt(False, "Give the texts to the model as they are, without the run's template.")
    task: str | None = opt(None, "With --run trained on several tasks: whose template, one-shot prefix and soft prompt to use "
                                 "(required for such a run).", metavar="NAME")
    max_new_tokens: int | None = opt(None, "Tokens to generate (default: the run's, from its training outputs).", positive=True,
                                     metavar="N")
    full: bool = opt(False, "Print the whole continuation, not just its first line.")
    texts: tuple = opt((), "Inputs; with none, one input per line is read from standard input.", nargs="*", metavar="TEXT",
                        positional=True)
