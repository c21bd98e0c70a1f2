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
    num_beams: int = opt(1, "Beams for generation (the tuned task and generation tasks; tasks with choices are scored by log-likelihood): 1 = greedy; the paper used 4. Recorded in results.", positive=True, metavar="N")

    def shot_counts(self) -> list[int]:
        return parse_shots(self.shots)


@dataclass
class EvalCommand(EvalOptions):
    """``retain eval``."""

    run: str | None = opt(None, "A run directory written by 'retain train'.", metavar="DIR", group="source")
    model: str | None = opt(None, "A model spec (alias, .gguf, directory, Hub id).", metavar="MODEL", group="source")
    prompt: str = opt("auto", "Soft prompt (or promot-lora's LoRA) use: auto = tuned task with it, other tasks without (paper); "
                              "on = everywhere; off = nowhere.", choices=PROMPT_RULES)
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

    shots: str = opt("1,4", "Comma-separated shot counts (the paper's 1 and 4: a table and plots for each); a YAML task's "
                            "own 'shots' wins.")
    methods: str = opt("base,full,promot", "Comma-separated methods: base (untrained), any registered method, NAME-1shot "
                                           "(with --one-shot), wise-ft, lines (post-hoc, from the full run).")
    wise_alphas: str = opt("0.25,0.5,0.75", "Interpolation weights for wise-ft.")
    lines_alphas: str = opt("0.5", "LiNeS: share of the fine-tuning update the first layer keeps (one evaluation per value); "
                                   "layer l of L keeps alpha + beta (l-1)/(L-1).")
    lines_beta: float | None = opt(None, "LiNeS: how much more of the update the deepest layer keeps than the first; default "
                                         "1 - alpha (the paper's single-task setting: the deepest layer keeps all of it).",
                                   nonneg=True)
    title: str = opt("Comparison", "Title of results.md.")
    seeds: int = opt(1, "Train every trained method S times (seeds --seed .. --seed+S-1); the intervals include that variance.",
                     positive=True, metavar="S")
    sweep: str | None = opt(None, "Train every method at each value of training option(s): FIELD=V1,V2,... (e.g. lr=1e-5,3e-5,1e-4); "
                                  "FIELD+FIELD2=V1,... sets several at once (lr+stage2_lr=...: full FT's and ProMoT stage 2's "
                                  "learning rate alike). Runs are named METHOD@FIELD=V; frontier.md/frontier.png draw each "
                                  "method's tuned-task score against Norm. Avg. over the values.", metavar="SPEC")


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
    no_prompt: bool = opt(False, "Drop the soft prompt or promot-lora's LoRA (and the one-shot prefix): the fine-tuned model as "
                                 "is, for tasks other than the tuned one.")
    raw: bool = opt(False, "Give the texts to the model as they are, without the run's template.")
    task: str | None = opt(None, "With --run trained on several tasks: whose template, one-shot prefix and soft prompt to use "
                                 "(required for such a run).", metavar="NAME")
    max_new_tokens: int | None = opt(None, "Tokens to generate (default: the run's, from its training outputs).", positive=True,
                                     metavar="N")
    num_beams: int = opt(1, "Beams: 1 = greedy (the decoding every score is computed with, unless the evaluation said "
                            "otherwise); 4 = the ProMoT paper's beam search. The answer is the first line of the best beam.",
                         positive=True, metavar="N")
    full: bool = opt(False, "Print the whole continuation, not just its first line.")
    json: bool = opt(False, "Print one JSON object per input: input, output and, with --registry, adapter (the task whose adapter "
                            "answered; null: the base model, for an input the switch sends to its general class).")
    texts: tuple = opt((), "Inputs; with none, one input per line is read from standard input.", nargs="*", metavar="TEXT",
                        positional=True)


@dataclass
class CurveOptions(EvalOptions):
    """``retain analyze format-curve``'s own options (the training options are ``TrainConfig``'s)."""

    methods: str = opt("full,promot", "Comma-separated methods trained with one budget and followed: any registered method, "
                                      "NAME-1shot.")
    every: int = opt(10, "Score the suite and the tuned task every N optimizer steps of each stage (and at its first and "
                         "last step).", positive=True, metavar="N")
    tasks: str | None = opt(None, "Comma-separated names of --suite tasks to score (default: every task).", metavar="NAMES")
    keep_runs: bool = opt(False, "Keep the trained runs in DIR/runs/ (default: removed once followed; the curve is the product).")


@dataclass
class GradientOptions:
    """``retain analyze gradients``'s own options (the training options are ``TrainConfig``'s)."""

    methods: str = opt("full,promot", "Comma-separated methods trained with one budget and measured in every stage that trains "
                                      "the model's weights: any registered method, NAME-1shot.")
    every: int = opt(10, "Measure at step 0 and every K optimizer steps of those stages (and at their last step).",
                     positive=True, metavar="K")
    probe_batches: int = opt(4, "Training batches (of --batch-size examples, drawn with --seed) measured at every step, "
                                "each with its outputs permuted among its examples; the cosine is their mean ± SE.",
                             positive=True, metavar="B")
    keep_runs: bool = opt(False, "Keep the trained runs in DIR/runs/ (default: removed once measured).")
