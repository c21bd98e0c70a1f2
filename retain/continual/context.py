"""What every continual method is given: the model, tokenizer, config, staging folder and log
(``Context``), the registry being extended (``Previous``), and each task's generation length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retain.continual.config import ContinualConfig
from retain.continual.methods import get
from retain.continual.tasks import Task
from retain.data import TaskFormat, tokenize
from retain.engine import run_stage
from retain.evaluation.decoding import answer_budget
from retain.methods import Stage


@dataclass(frozen=True)
class Previous:
    """An existing registry being extended (``--resume-from``): its folder, registry.json and tasks."""

    path: Path
    info: dict
    tasks: list


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
        self.base_scores: dict = {}  # the base model on each new task (FWT's b_j)
        self.general: dict = {"suite": cfg.general_suite, "base": None, "stages": [], "evals": []}
        self.general_tasks: list | None = None

    def start(self, tasks: list[Task], max_new: dict) -> None:
        """Before the first stage: the base model on the new tasks and on the general suite."""
        from retain.continual.general import load_general_suite, score_suite
        from retain.continual.measure import evaluate_plain

        cfg, model = self.cfg, self.loaded.model
        self.base_scores = evaluate_plain(model, self.tokenizer, tasks, is_seq2seq=self.is_seq2seq, n=cfg.eval_samples,
                                          max_new=max_new, batch_size=cfg.eval_batch_size)
        self.progress("[retain] base model: " + ", ".join(f"{n} {e['score']:.1f}" for n, e in self.base_scores.items()))
        self.general_tasks = load_general_suite(cfg)
        if self.general_tasks:
            self.general["base"] = score_suite(model, self.tokenizer, self.general_tasks, cfg, is_seq2seq=self.is_seq2seq)
            na = self.general["base"]["norm_avg_summary"].get(str(cfg.general_shots)) or {}
            self.progress(f"[retain] base model, general suite {cfg.general_suite}: Norm. Avg. {_f(na.get('score'))} ± {_f(na.get('se'))}")

    def measure_general(self, stage: str, model, router=None) -> None:
        """After a stage: the deployed system (``router``: a switch with its adapters) on the general suite."""
        from retain.continual.general import score_suite, stage_record

        if not self.general_tasks:
            return
        res = score_suite(model, self.tokenizer, self.general_tasks, self.cfg, is_seq2seq=self.is_seq2seq, router=router)
        rec = stage_record(stage, self.general["base"], res)
        self.general["stages"].append(rec)
        self.general["evals"].append(res)
        d = rec["delta"] or {}
        ci = d.get("ci") or [None, None]
        self.progress(f"[retain] general ability after {stage}: Norm. Avg. {_f(rec['norm_avg'])}, change from the base "
                      f"{_f(d.get('diff'), '+.2f')} [{_f(ci[0], '+.2f')}, {_f(ci[1], '+.2f')}]")

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


def _f(x, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def max_new_tokens(task: Task, tokenizer, cap: int) -> int:
    """A continual task's generation length: its config's value, else the rule on its first 200 training outputs."""
    return answer_budget(tokenizer, [r["output"] for r in task.train[:200]], cap=cap, given=task.max_new_tokens)
