"""What every continual method is given: the model, tokenizer, config, staging folder and log
(``Context``), the registry being extended (``Previous``), and each task's generation length.

``Context.train`` is the one way a method trains a task: ``engine.run_stage`` with the task's best
weights kept (``--eval-every``, scored on ``selection_rows``) and, once the task is done, its trained
weights and record in ``checkpoints/<task>/`` of the staging folder, which ``--resume`` reloads instead
of training again (an interrupted task continues from its last ``--save-every`` checkpoint). What is measured
once a task is done (the base model before the first task, each stage's scores and routing, the general suite) goes
through ``Context.measured``: kept in ``checkpoints/_measured/`` too, and read back by ``--resume`` instead of
generating again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retain.artifacts import write_json
from retain.continual.config import ContinualConfig
from retain.continual.methods import get
from retain.continual.tasks import Task
from retain.data import TaskFormat, tokenize
from retain.distributed import on_main
from retain.engine import load_state, run_stage
from retain.engine.checkpoints import full_state, write_state
from retain.evaluation.decoding import answer_budget
from retain.evaluation.harness import evaluate_tuned
from retain.methods import Stage, prepare

FINAL = "final.safetensors"  # a finished task's trained weights, in checkpoints/<task>/ (with done.json)
MEASURED = "_measured"  # checkpoints/_measured/<key>-<digest>.json: what Context.measured kept (no task name starts with _)


@dataclass(frozen=True)
class Previous:
    """An existing registry being extended (``--resume-from``): its folder, registry.json and tasks."""

    path: Path
    info: dict
    tasks: list


class Context:
    """What every method needs: model, tokenizer, config, staging folder, log."""

    def __init__(self, cfg: ContinualConfig, loaded, staging: Path, log, progress, reuse=None):
        self.cfg, self.loaded, self.staging, self.log, self.progress = cfg, loaded, staging, log, progress
        self.reuse = reuse  # continual.reuse.Reuse: base scores and adapters taken from earlier runs, or None
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
        """Before the first stage: the base model on the new tasks and on the general suite (or, with
        ``--base-scores``, its scores as an earlier run recorded them, checked by ``continual.reuse.reused_base``)."""
        from retain.continual.general import load_general_suite, score_suite
        from retain.continual.measure import evaluate_plain

        cfg, model = self.cfg, self.loaded.model
        reused = self.reuse.base if self.reuse else None
        if reused:
            self.progress(f"[retain] base model: scores taken from {self.reuse.base_from}")
            self.base_scores = dict(reused["tasks"])
        else:
            self.base_scores = self.measured("base", evaluate_plain, model, self.tokenizer, tasks, is_seq2seq=self.is_seq2seq,
                                             n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size,
                                             of=self.scored(tasks, max_new))
        self.progress("[retain] base model: " + ", ".join(f"{n} {e['score']:.1f}" for n, e in self.base_scores.items()))
        self.general_tasks = load_general_suite(cfg)
        if self.general_tasks:
            self.general["base"] = reused["general"] if reused else self.measured(
                "base-general", score_suite, model, self.tokenizer, self.general_tasks, cfg, is_seq2seq=self.is_seq2seq,
                of=self._general_items())
            na = self.general["base"]["norm_avg_summary"].get(str(cfg.general_shots)) or {}
            self.progress(f"[retain] base model, general suite {cfg.general_suite}: Norm. Avg. {_f(na.get('score'))} ± {_f(na.get('se'))}")

    def measure_general(self, stage: str, model, router=None) -> None:
        """After a stage: the deployed system (``router``: a switch with its adapters) on the general suite."""
        from retain.continual.general import score_suite, stage_record

        if not self.general_tasks:
            return
        res = self.measured(f"general-after-{stage}", score_suite, model, self.tokenizer, self.general_tasks, self.cfg,
                            is_seq2seq=self.is_seq2seq, router=router, of=self._general_items())
        rec = stage_record(stage, self.general["base"], res)
        self.general["stages"].append(rec)
        self.general["evals"].append(res)
        d = rec["delta"] or {}
        ci = d.get("ci") or [None, None]
        self.progress(f"[retain] general ability after {stage}: Norm. Avg. {_f(rec['norm_avg'])}, change from the base "
                      f"{_f(d.get('diff'), '+.2f')} [{_f(ci[0], '+.2f')}, {_f(ci[1], '+.2f')}]")

    def measured(self, key: str, compute, *args, of=None, **kwargs):
        """What ``compute(*args, **kwargs)`` measures after a finished stage, kept for ``--resume``. With ``--save-every`` the value
        is written to ``checkpoints/_measured/<key>-<digest>.json``; a resumed run reads that file instead of measuring
        again. The run's settings were checked when it resumed, and ``of`` (what is scored: items, templates, budgets)
        is hashed into the file name, so changed data is measured afresh. A fresh run uses the JSON it writes
        (``compute``'s value after a JSON round trip), so both paths continue from the same value."""
        digest = hashlib.sha256(json.dumps(of, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]
        path = self.staging / "checkpoints" / MEASURED / f"{key}-{digest}.json"
        if self.cfg.resume and path.is_file():
            self.progress(f"[retain] {key}: measured before the interruption, read from {path.name}")
            return json.loads(path.read_text(encoding="utf-8"))
        value = json.loads(json.dumps(compute(*args, **kwargs), ensure_ascii=False))
        if self.cfg.save_every:
            on_main(write_json, path, value, mkdir=True)
        return value

    def scored(self, tasks: list[Task], max_new: dict) -> list:
        """What scoring ``tasks`` reads (for ``measured``'s digest): each task's settings and validation items."""
        n = self.cfg.eval_samples
        return [[t.spec(), t.validation[:n], max_new.get(t.name)] for t in tasks]

    def _general_items(self) -> list:
        return [asdict(t) for t in self.general_tasks or []]  # evaluation.suite.Task: plain fields

    def rows(self, task: Task, examples: list[dict] | None = None) -> list[dict]:
        fmt = TaskFormat(task.template, None, self.is_seq2seq)
        return tokenize(examples if examples is not None else task.train, self.tokenizer, fmt, self.max_length).rows

    def train(self, model, name: str, trains: str, rows: list[dict], steps: int, select: list[Task] = ()) -> dict:
        """Train one task (``select``: the tasks whose validation score picks the best weights)."""
        stage, stage_dir, cfg = Stage(name, trains), self.staging / "checkpoints" / name, self.cfg
        prepare(model, stage)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        done = stage_dir / "done.json"
        if cfg.resume and done.is_file():  # finished before the interruption
            load_state(model, stage_dir / FINAL)
            model.requires_grad_(False)
            rec = json.loads(done.read_text())
            self.progress(f"[retain] {name}: already complete, loaded")
        else:
            self.progress(f"[retain] {cfg.method} {name}: training {trains} for {steps} steps at lr {self.lr:g} ({len(rows)} examples)")
            rec = run_stage(model, self.tokenizer, stage, rows=rows, steps=steps, lr=self.lr, prompt_lr=self.lr, cfg=cfg,
                            stage_dir=stage_dir, evaluate=self.selector(list(select)), log=self.log, resume=cfg.resume,
                            resumable=bool(cfg.save_every))
            if cfg.save_every:  # a run that can be resumed keeps each finished task's weights until it is written
                state = {n: t for n, t in full_state(model).items() if n in trained}
                on_main(write_state, state, stage_dir / FINAL)
                on_main(write_json, done, rec)
            best = rec["best"]
            self.progress(f"[retain] {name}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}"
                          + (f", best score {best['score']:.2f} at step {best['step']}" if best else ""))
        self.records.append(rec)
        return rec

    def selector(self, tasks: list[Task]):
        """The score that keeps a task's best weights: the mean tuned-task score over ``tasks``' selection rows
        (None: ``--eval-every 0`` or nothing to score, the last weights are kept)."""
        cfg = self.cfg
        chosen = [(t, selection_rows(t, cfg)) for t in tasks]
        chosen = [(t, rows) for t, rows in chosen if rows]
        if not (cfg.eval_every and chosen):
            return None

        def evaluate(model) -> float:
            scores = [evaluate_tuned(model, self.tokenizer, rows, TaskFormat(t.template, None, self.is_seq2seq), t.metric,
                                     is_seq2seq=self.is_seq2seq, max_new_tokens=t.max_new_tokens, batch_size=cfg.eval_batch_size,
                                     shard=True)["score"] for t, rows in chosen]
            return sum(scores) / len(scores)

        return evaluate

    def after(self, task: Task, scores: dict, prefix: str = "") -> None:
        self.progress(f"[retain] after {task.name}: {prefix}" + ", ".join(f"{n} {e['score']:.1f}" for n, e in scores.items()))


def selection_rows(task: Task, cfg) -> list[dict]:
    """The validation rows that pick a task's best weights: those after the first ``eval_samples`` (which measure R),
    up to ``select_samples``; the first ``select_samples`` when the file has no rows beyond them."""
    rows = task.validation[cfg.eval_samples: cfg.eval_samples + cfg.select_samples]
    return rows or task.validation[: cfg.select_samples]


def _f(x, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def max_new_tokens(task: Task, tokenizer, cap: int) -> int:
    """A continual task's generation length: its config's value, else the rule on its first 200 training outputs."""
    return answer_budget(tokenizer, [r["output"] for r in task.train[:200]], cap=cap, given=task.max_new_tokens)
