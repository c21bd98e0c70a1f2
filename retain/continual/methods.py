"""Continual methods as typed data in a registry, and the two ways they run.

| method          | what trains per stage                     | kept                                  |
|-----------------|-------------------------------------------|---------------------------------------|
| switchcit       | a new LoRA adapter (base frozen), switch  | registry: adapters/<task>/, switch/   |
| sequential      | all weights, on the new task              | results only                          |
| sequential-lora | one LoRA adapter, carried across tasks    | results only                          |
| replay          | all weights, new task + replay buffer     | results only                          |
| multitask       | all weights, on every task at once (1 stage, steps x tasks) | results only        |

Every stage is one ``retain.engine.run_stage`` call. A method is one ``ContinualMethod``: what it trains,
its default learning rate, whether it replays or trains jointly, whether it writes a registry, and the
function that runs it (``run_switchcit`` or ``run_baseline``). Adding one: CONTRIBUTING.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retain.continual.config import ContinualConfig
from retain.continual.measure import evaluate_plain
from retain.continual.switchcit import run_switchcit
from retain.continual.tasks import Task
from retain.data import TaskFormat, tokenize
from retain.engine import run_stage
from retain.evaluation.decoding import answer_budget
from retain.methods import Stage
from retain.methods.lora import attach_lora
from retain.methods.registry import Registry


@dataclass(frozen=True)
class Previous:
    """An existing registry being extended (``--resume-from``): its folder, registry.json and tasks."""

    path: Path
    info: dict
    tasks: list


@dataclass(frozen=True)
class ContinualMethod:
    name: str
    help: str
    run: Callable  # (Context, new tasks, max_new_tokens per task, Previous | None) -> stages, evals (, routing, ...)
    trains: str = "model"  # "model" (all weights) or "lora"
    default_lr: float = 2e-5
    joint: bool = False  # every task at once, one stage of steps x tasks (the multitask upper bound)
    replay: bool = False  # mix stored examples of earlier tasks into each stage
    registry: bool = False  # writes a registry (adapters + switch) that --resume-from can extend


CONTINUAL_METHODS = Registry("continual method")
register, unregister, names, get, help_text = (CONTINUAL_METHODS.register, CONTINUAL_METHODS.unregister, CONTINUAL_METHODS.names,
                                               CONTINUAL_METHODS.get, CONTINUAL_METHODS.help_text)


class Context:
    """What every method needs: model, tokenizer, config, staging folder, log."""

    def __init__(self, cfg: ContinualConfig, loaded, staging: Path, log, progress):
        self.cfg, self.loaded, self.staging, self.log, self.progress = cfg, loaded, staging, log, progress
        self.method = get(cfg.method)
        self.tokenizer, self.is_seq2seq = loaded.tokenizer, loaded.is_seq2seq
        self.lr = cfg.lr or self.method.default_lr
        limit = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(loaded.model.config, "n_positions", None)
        self.max_length = min(cfg.max_length, limit) if limit else cfg.max_length
        self.records: list[dict] = []

    def rows(self, task: Task, examples: list[dict] | None = None) -> list[dict]:
        fmt = TaskFormat(task.template, None, self.is_seq2seq)
        return tokenize(examples if examples is not None else task.train, self.tokenizer, fmt, self.max_length).rows

    def train(self, model, name: str, trains: str, rows: list[dict], steps: int) -> dict:
        self.progress(f"[retain] {self.cfg.method} {name}: training {trains} for {steps} steps at lr {self.lr:g} ({len(rows)} examples)")
        rec = run_stage(model, self.tokenizer, Stage(name, trains), rows=rows, steps=steps, lr=self.lr, prompt_lr=self.lr,
                        cfg=self.cfg, stage_dir=self.staging / "checkpoints" / name, log=self.log, resumable=False)
        self.progress(f"[retain] {name}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}")
        self.records.append(rec)
        return rec

    def after(self, task: Task, scores: dict, prefix: str = "") -> None:
        self.progress(f"[retain] after {task.name}: {prefix}" + ", ".join(f"{n} {e['score']:.1f}" for n, e in scores.items()))


def max_new_tokens(task: Task, tokenizer, cap: int) -> int:
    """A continual task's generation length: its config's value, else the rule on its first 200 training outputs."""
    return answer_budget(tokenizer, [r["output"] for r in task.train[:200]], cap=cap, given=task.max_new_tokens)


# ------------------------------------------------------------------ methods
def run_baseline(ctx: Context, tasks: list[Task], max_new: dict, previous: Previous | None = None) -> dict:
    """One model for every task: trained task after task (with replay), or on all tasks at once (joint)."""
    cfg, method = ctx.cfg, ctx.method
    model = ctx.loaded.model
    if method.trains == "lora":
        model = attach_lora(model, cfg, ctx.is_seq2seq)

    def evaluate(seen):
        return evaluate_plain(model, ctx.tokenizer, seen, is_seq2seq=ctx.is_seq2seq, n=cfg.eval_samples, max_new=max_new,
                              batch_size=cfg.eval_batch_size)

    if method.joint:
        ctx.train(model, "all", method.trains, [r for t in tasks for r in ctx.rows(t)], cfg.max_steps * len(tasks))
        return {"stages": ["all"], "evals": [evaluate(tasks)]}
    rng = random.Random(cfg.seed)
    buffer: list[dict] = []
    stages, evals = [], []
    for i, task in enumerate(tasks):
        rows = ctx.rows(task)
        if method.replay and buffer:
            extra = round(cfg.replay_ratio / (1 - cfg.replay_ratio) * len(rows))
            rows = rows + [rng.choice(buffer) for _ in range(extra)]
        if method.trains == "lora":
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n)
        ctx.train(model, task.name, method.trains, rows, cfg.max_steps)
        if method.replay:
            k = min(len(task.train), max(round(cfg.replay_fraction * len(task.train)), cfg.replay_min))
            buffer += ctx.rows(task, rng.sample(task.train, k))
        stages.append(task.name)
        evals.append(evaluate(tasks[: i + 1]))
        ctx.after(task, evals[-1])
    return {"stages": stages, "evals": evals}


# the registry entries, in the order --help lists them
register(ContinualMethod("switchcit", "one LoRA adapter per task on the frozen base + a switch that routes each input",
                         run_switchcit, trains="lora", default_lr=2e-4, registry=True))
register(ContinualMethod("sequential", "full fine-tuning task after task", run_baseline))
register(ContinualMethod("sequential-lora", "one LoRA adapter trained task after task", run_baseline, trains="lora",
                         default_lr=2e-4))
register(ContinualMethod("replay", "sequential with stored examples of earlier tasks mixed in", run_baseline, replay=True))
register(ContinualMethod("multitask", "all tasks at once (upper bound)", run_baseline, joint=True))
