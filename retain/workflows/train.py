"""``retain train``: setup -> fit (one engine call per stage) -> save.

All input checks run before the model is loaded, so a typo costs a second,
not a model load; nothing is written until the data and flags are valid.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from retain import methods
from retain.artifacts import RUN_FILE, JsonlLog, check_output, commit, staging_dir, write_json
from retain.config import TrainConfig, to_dict
from retain.distributed import begin, is_main, main_only, on_main, parallelism, world
from retain.engine import check_precision, load_state, run_stage, save_state
from retain.engine.checkpoints import full_state, is_sharded, part_state, save_pretrained
from retain.errors import RetainError
from retain.evaluation.decoding import using
from retain.evaluation.harness import evaluate_tuned
from retain.methods.lora import plain_state
from retain.models import load_model, model_options
from retain.versions import __version__, library_versions
from retain.workflows.tasks import Task, load_task, prepare_task, task_record, task_specs


def validated_inputs(cfg: TrainConfig) -> list[Task]:
    """Check flags and data; returns the tasks with their examples (``workflows.tasks``: one, or several)."""
    specs = task_specs(cfg)
    if not cfg.output:
        raise RetainError("--output is required")
    method = methods.get(cfg.method)
    check_precision(cfg)
    if len(specs) == 1:
        cfg.template = specs[0].template
    else:
        check_multitask(method)
    check_output(Path(cfg.output), overwrite=cfg.overwrite, resume=cfg.resume)
    return [load_task(spec, single=len(specs) == 1) for spec in specs]


def check_multitask(method: methods.Method) -> None:
    """Several tasks: a stage trains the prompt alone (once per task) or no prompt (on the mixture)."""
    for stage in method.stages:
        if stage.trains_prompt and len(stage.parts) > 1:
            raise RetainError(f"--method {method.name}: several tasks need stages that train the prompt alone (once per task) "
                              f"or no prompt (on the mixture); stage '{stage.name}' trains {stage.trains}")


@dataclass
class Setup:
    """Everything a run needs once inputs are checked and the model is loaded."""

    cfg: TrainConfig
    method: methods.Method
    loaded: object  # retain.models.Loaded
    tasks: list[Task]
    max_length: int
    fingerprint: str  # sha256 of the base weights as loaded, before any training

    @property
    def multi(self) -> bool:
        return len(self.tasks) > 1

    @property
    def fmt(self):
        """The format, metric and generation length of a one-task run (the analyses train one task)."""
        return self.tasks[0].fmt

    @property
    def metric(self) -> str:
        return self.tasks[0].metric

    @property
    def max_new(self) -> int:
        return self.tasks[0].max_new

    @property
    def adapters(self) -> tuple[str, ...]:
        """One PEFT prompt adapter per task (several tasks with a soft prompt), else none (PEFT's ``default``)."""
        return tuple(t.name for t in self.tasks) if self.multi and self.method.uses_prompt else ()


def setup(cfg: TrainConfig) -> Setup:
    """Check inputs, load the model, tokenize; nothing is written."""
    _warn_single_process_launch()
    method = methods.get(cfg.method)
    cfg = method.configure(cfg)  # the settings the method fixes, recorded as used
    tasks = validated_inputs(cfg)
    loaded = load_model(cfg.model, **model_options(cfg))
    limit = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(loaded.model.config, "n_positions", None)
    max_length = cfg.max_length
    if limit:
        max_length = min(max_length, limit - (cfg.prompt_length if method.uses_prompt else 0))
    for task in tasks:
        prepare_task(task, loaded.tokenizer, is_seq2seq=loaded.is_seq2seq, one_shot=cfg.one_shot, seed=cfg.seed,
                     max_length=max_length, max_new_tokens=cfg.max_new_tokens)
    return Setup(cfg, method, loaded, tasks, max_length, loaded.fingerprint)


@contextlib.contextmanager
def active_prompt(model, name: str | None):
    """The PEFT prompt adapter ``name`` active for the duration (None: leave the model as it is)."""
    if name is None:
        yield
        return
    before = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(before)


def checkpoint_metric(s: Setup, tasks: list[Task]):
    """The score used to keep a stage's best checkpoint: the tuned-task score, the mean over ``tasks`` (each in its
    format, under its own prompt adapter) when a stage trains on several (None: keep the last weights)."""
    cfg = s.cfg
    if not (cfg.eval_every and all(t.validation for t in tasks)):
        return None

    def evaluate(model) -> float:
        scores = []
        with using(cfg.num_beams):  # the decoding of the reported evaluation (--num-beams)
            for t in tasks:
                with active_prompt(model, t.name if s.adapters else None):
                    scores.append(evaluate_tuned(model, s.loaded.tokenizer, t.validation[: cfg.eval_samples], t.fmt, t.metric,
                                                 is_seq2seq=s.loaded.is_seq2seq, max_new_tokens=t.max_new,
                                                 batch_size=cfg.eval_batch_size, shard=True)["score"])
        return sum(scores) / len(scores)

    return evaluate


def fit(s: Setup, model, staging: Path, log, progress, observe=None) -> list[dict]:
    """Every stage of the method, through the engine; several tasks: a prompt-only stage once per task (its own data,
    its own adapter), any other stage on the mixture. A stage finished before an interruption is reloaded.
    ``observe(setup, trainer, stage) -> [TrainerCallback]``: callbacks that measure each stage as it trains."""
    records = []
    for stage in s.method.stages:
        for task in (s.tasks if s.adapters and stage.trains_prompt else [None]):
            with active_prompt(model, task.name if task else None):
                records.append(fit_stage(s, model, stage, task, staging, log, progress, observe))
    return records


def fit_stage(s: Setup, model, stage, task: Task | None, staging: Path, log, progress, observe=None) -> dict:
    """One stage on one task's data (``task``) or on every task's (None: each row tagged with its task's prompt)."""
    cfg = s.cfg
    steps, lr, prompt_lr = stage.budget(cfg)
    label = stage.name + (f"-{task.name}" if task else "")
    stage_dir = staging / "checkpoints" / label
    done = stage_dir / "done.json"
    if cfg.resume and done.is_file():  # finished before the interruption
        load_state(model, stage_dir / "final.safetensors")
        progress(f"[retain] {label}: already complete, loaded")
        return json.loads(done.read_text())
    tasks, adapters = ([task], ()) if task else (s.tasks, s.adapters)  # the mixture: each row names its task's prompt
    rows = [{**r, "prompt_task": i} if adapters else r for i, t in enumerate(tasks) for r in t.rows]
    progress(f"[retain] {cfg.method} {label}: training {stage.trains} for {steps} steps at lr {lr:g}"
             + (f" on {len(rows)} examples of {len(tasks)} tasks" if len(tasks) > 1 else ""))
    rec = run_stage(model, s.loaded.tokenizer, stage, rows=rows, steps=steps, lr=lr, prompt_lr=prompt_lr, cfg=cfg,
                    stage_dir=stage_dir, evaluate=checkpoint_metric(s, tasks), log=log, resume=cfg.resume,
                    prompt_adapters=adapters or None, observe=observe and functools.partial(observe, s))
    if s.multi:
        rec["tasks"] = [t.name for t in tasks]
    save_state(model, stage_dir / "final.safetensors")  # every process (gathered if sharded); the main one writes
    on_main(write_json, done, rec)
    best = rec["best"]
    metric = tasks[0].metric if len(tasks) == 1 else "mean score"
    progress(f"[retain] {label}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}"
             + (f", best {metric} {best['score']:.2f} at step {best['step']}" if best else ""))
    return rec


def train(cfg: TrainConfig, *, progress=print, observe=None) -> Path:
    """Train ``cfg.method``; under a launch of N processes every process calls this and trains its share of each
    batch, and the main process writes the run. ``observe(setup, trainer, stage)``: extra callbacks per stage
    (``retain analyze``)."""
    t_start = time.time()
    begin(cfg.deepspeed)
    progress = main_only(progress)
    out = Path(cfg.output) if cfg.output else None
    s = setup(cfg)
    staging = staging_dir(out)
    on_main(_fresh_staging, staging, keep=cfg.resume)
    log = JsonlLog(staging / "train_log.jsonl", t_start, enabled=is_main(), resume=cfg.resume)
    log({"event": "start", "method": cfg.method, "model": cfg.model, "examples": sum(len(t.rows) for t in s.tasks),
         "truncated": sum(t.truncated for t in s.tasks), **({"tasks": [t.name for t in s.tasks]} if s.multi else {})})
    model = methods.wrap(s.loaded.model, s.loaded.tokenizer, s.method, cfg, s.loaded.is_seq2seq, tasks=s.adapters)
    try:
        records = fit(s, model, staging, log, progress, observe)
    except BaseException as e:  # where the clock of the kept run stopped, for the wall time of its --resume
        log({"event": "stopped", "reason": type(e).__name__})
        raise
    save(s, model, staging, records, log)
    on_main(commit, staging, out)
    return out


def _fresh_staging(staging: Path, keep: bool) -> None:
    if staging.exists() and not keep:
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)


def save(s: Setup, model, root: Path, records: list[dict], log: JsonlLog) -> None:
    """The run's artifacts (``prompt/``, ``lora/``, ``model/``) and run.json. Every process calls this: the weights
    of a sharded model are gathered (``engine.checkpoints``), and the main process writes."""
    method = s.method
    on_main(shutil.rmtree, root / "checkpoints", ignore_errors=True)
    state = full_state(model) if is_sharded(model) and (method.changes_base or method.uses_lora) else None
    if method.uses_prompt:  # several tasks: prompt/NAME/, one standard PEFT prompt adapter per task
        save_pretrained(model, root / "prompt", state, **({"selected_adapters": list(s.adapters)} if s.adapters else {}))
    if method.uses_lora:
        save_pretrained(model, root / "lora", state)
    if method.changes_base:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base_state = state and part_state(state, model, base)
        if method.uses_lora:  # promot-lora: the LoRA is in lora/, model/ holds the plain tuned weights
            base_state = plain_state(base_state or full_state(base))
        save_pretrained(base, root / "model", base_state, safe_serialization=True)
        on_main(s.loaded.tokenizer.save_pretrained, str(root / "model"))
    on_main(lambda: write_json(root / RUN_FILE, run_info(s, root, records, log.elapsed())))


def run_info(s: Setup, root: Path, records: list[dict], wall: float) -> dict:
    """run.json: what was trained, how, on what, and how it went."""
    cfg, one = s.cfg, s.tasks[0]  # several tasks: no run-wide format, metric or budget (each task has its own)
    return {
        "retain_version": __version__,
        "method": cfg.method,
        "config": to_dict(cfg),
        "base": {"spec": cfg.model, "fingerprint": s.fingerprint, "is_seq2seq": s.loaded.is_seq2seq},
        "format": None if s.multi else {"template": one.fmt.template, "one_shot": one.fmt.one_shot},
        "removable": list(s.method.removable),  # parts used for the tuned task only (run.load_run)
        "metric": None if s.multi else one.metric,
        "max_new_tokens": None if s.multi else one.max_new,
        "max_length": s.max_length,
        "examples": {"train": sum(len(t.rows) for t in s.tasks), "validation": sum(len(t.validation) for t in s.tasks),
                     "truncated": sum(t.truncated for t in s.tasks)},
        "tasks": [task_record(t) for t in s.tasks],
        "checkpoint_score": "mean of the tasks' validation scores" if s.multi else "validation score",
        "stages": records,
        "memory": peak_memory(records),
        "artifacts": sorted(p.name for p in root.iterdir() if p.is_dir()),
        "world_size": world()[1],
        "parallelism": parallelism(),
        "versions": library_versions(),
        "wall_time_s": round(wall, 2),
    }


def peak_memory(records: list[dict]) -> dict:
    """The largest stage's memory: retain's estimate before it ran and the measured peak (see ``engine.memory``)."""
    mems = [r["memory"] for r in records if "memory" in r]
    return {"estimate_bytes": max((m["estimate_bytes"]["total"] for m in mems), default=None),
            "measured_peak_bytes": max((m["measured_peak"]["bytes"] for m in mems), default=None),
            "measured_how": mems[-1]["measured_peak"]["how"] if mems else None}


def _warn_single_process_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE process in accelerate 1.x: say so."""
    import os

    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        sys.stderr.write("[retain] note: 'accelerate launch --cpu' started a single process; for data-parallel training "
                         "on CPU use 'accelerate launch --multi_gpu --num_processes N' (torchrun, gloo backend)\n")
