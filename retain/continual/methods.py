"""``retain continual``: learn tasks in order with one method, measure after each stage.

| method          | what trains per stage                     | kept                                  |
|-----------------|-------------------------------------------|---------------------------------------|
| switchcit       | a new LoRA adapter (base frozen), switch  | registry: adapters/<task>/, switch/   |
| sequential      | all weights, on the new task              | results only                          |
| sequential-lora | one LoRA adapter, carried across tasks    | results only                          |
| replay          | all weights, new task + replay buffer     | results only                          |
| multitask       | all weights, on every task at once (1 stage, steps x tasks) | results only        |

Every stage is one ``retain.engine.run_stage`` call.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

from retain.config import to_dict
from retain.continual.config import ContinualConfig
from retain.continual.measure import evaluate_plain, evaluate_routed, summarize
from retain.continual.tasks import Task, load_task, load_tasks, read_task_config
from retain.data import TaskFormat, tokenize
from retain.errors import RetainError
from retain.evaluation.decoding import DECODING, answer_budget
from retain.methods import Stage

LORA_METHODS = ("switchcit", "sequential-lora")


def default_lr(method: str) -> float:
    return 2e-4 if method in LORA_METHODS else 2e-5


class Context:
    """What every method needs: model, tokenizer, config, staging folder, log."""

    def __init__(self, cfg: ContinualConfig, loaded, staging: Path, log, progress):
        self.cfg, self.loaded, self.staging, self.log, self.progress = cfg, loaded, staging, log, progress
        self.tokenizer, self.is_seq2seq = loaded.tokenizer, loaded.is_seq2seq
        self.lr = cfg.lr or default_lr(cfg.method)
        limit = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(loaded.model.config, "n_positions", None)
        self.max_length = min(cfg.max_length, limit) if limit else cfg.max_length
        self.records: list[dict] = []

    def rows(self, task: Task, examples: list[dict] | None = None) -> list[dict]:
        fmt = TaskFormat(task.template, None, self.is_seq2seq)
        return tokenize(examples if examples is not None else task.train, self.tokenizer, fmt, self.max_length).rows

    def train(self, model, name: str, trains: str, rows: list[dict], steps: int) -> dict:
        from retain.engine import run_stage

        self.progress(f"[retain] {self.cfg.method} {name}: training {trains} for {steps} steps at lr {self.lr:g} ({len(rows)} examples)")
        rec = run_stage(model, self.tokenizer, Stage(name, trains), rows=rows, steps=steps, lr=self.lr, prompt_lr=self.lr,
                        cfg=self.cfg, stage_dir=self.staging / "checkpoints" / name, log=self.log, resumable=False)
        self.progress(f"[retain] {name}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}")
        self.records.append(rec)
        return rec


def max_new_tokens(task: Task, tokenizer, cap: int) -> int:
    if task.max_new_tokens:
        return task.max_new_tokens
    return answer_budget(tokenizer, [r["output"] for r in task.train[:200]], cap=cap)


# ------------------------------------------------------------------ methods
def run_baseline(ctx: Context, tasks: list[Task], max_new: dict) -> dict:
    """sequential, sequential-lora, replay, multitask: one model for every task."""
    from retain.methods.lora import attach_lora

    cfg = ctx.cfg
    model = ctx.loaded.model
    trains = "lora" if cfg.method == "sequential-lora" else "model"
    if trains == "lora":
        model = attach_lora(model, cfg, ctx.is_seq2seq)
    evaluate = lambda seen: evaluate_plain(model, ctx.tokenizer, seen, is_seq2seq=ctx.is_seq2seq, n=cfg.eval_samples,
                                           max_new=max_new, batch_size=cfg.eval_batch_size)
    if cfg.method == "multitask":
        rows = [r for t in tasks for r in ctx.rows(t)]
        ctx.train(model, "all", trains, rows, cfg.max_steps * len(tasks))
        return {"stages": ["all"], "evals": [evaluate(tasks)]}
    rng = random.Random(cfg.seed)
    buffer: list[dict] = []
    stages, evals = [], []
    for i, task in enumerate(tasks):
        rows = ctx.rows(task)
        if cfg.method == "replay" and buffer:
            extra = round(cfg.replay_ratio / (1 - cfg.replay_ratio) * len(rows))
            rows = rows + [rng.choice(buffer) for _ in range(extra)]
        if trains == "lora":
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n)
        ctx.train(model, task.name, trains, rows, cfg.max_steps)
        if cfg.method == "replay":
            k = min(len(task.train), max(round(cfg.replay_fraction * len(task.train)), cfg.replay_min))
            buffer += ctx.rows(task, rng.sample(task.train, k))
        stages.append(task.name)
        evals.append(evaluate(tasks[: i + 1]))
        ctx.progress(f"[retain] after {task.name}: " + ", ".join(f"{n} {e['score']:.1f}" for n, e in evals[-1].items()))
    return {"stages": stages, "evals": evals}


def run_switchcit(ctx: Context, old: list[Task], new: list[Task], max_new: dict, prev: Path | None,
                  feature_fingerprint: str | None = None) -> dict:
    import torch
    from peft import PeftModel

    from retain.continual.registry import copy_adapters, load_feature_model, save_adapter
    from retain.continual.switch import Switch, retained
    from retain.methods.lora import attach_lora, lora_config

    cfg = ctx.cfg
    model = ctx.loaded.model
    stored: dict[str, list[str]] = {}
    if prev is not None:  # the old registry's adapters (frozen), copied byte for byte, and its stored instructions
        model = PeftModel.from_pretrained(model, str(prev / "adapters" / old[0].name), adapter_name=old[0].name)
        for t in old[1:]:
            model.load_adapter(str(prev / "adapters" / t.name), adapter_name=t.name)
        copy_adapters(prev, ctx.staging, [t.name for t in old])
        stored = dict(Switch.load(prev / "switch").stored)
    features = load_feature_model(cfg.feature_model, model, ctx.tokenizer, ctx.is_seq2seq, max_length=cfg.switch_max_length,
                                  pooling=cfg.switch_pooling, layer=cfg.switch_layer,
                                  fingerprint=feature_fingerprint, trust_remote_code=cfg.trust_remote_code,
                                  allow_pickle=cfg.allow_pickle)
    cache: dict[str, torch.Tensor] = {}

    def features_of(task: Task) -> torch.Tensor:  # the feature model is frozen: validation features are computed once
        if task.name not in cache:
            cache[task.name] = features([r["input"] for r in task.validation[: cfg.eval_samples]])
        return cache[task.name]

    stages, evals, routing, fits = [], [], [], []
    seen = [t for t in old if t.validation]
    switch = None
    for i, task in enumerate(new):
        if isinstance(model, PeftModel):
            torch.manual_seed(cfg.seed)  # as attach_lora: a new adapter's initialisation depends on the seed only
            model.add_adapter(task.name, lora_config(cfg, ctx.is_seq2seq))
            model.set_adapter(task.name)
        else:
            model = attach_lora(model, cfg, ctx.is_seq2seq, adapter_name=task.name)
        if cfg.feature_model == "base":
            features.model = model  # adapters are switched off while reading features
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n and f".{task.name}." in n)
        ctx.train(model, task.name, "lora", ctx.rows(task), cfg.max_steps)
        save_adapter(model, task.name, ctx.staging)
        stored[task.name] = retained([r["input"] for r in task.train], cfg.retain_fraction, cfg.retain_min, cfg.seed)
        names = [t.name for t in old] + [t.name for t in new[: i + 1]]
        switch = Switch(names, {n: stored[n] for n in names}, hidden=cfg.switch_hidden,
                        info={"feature_model": cfg.feature_model})
        fit = switch.fit(features, epochs=cfg.switch_epochs, lr=cfg.switch_lr, batch_size=cfg.switch_batch_size, seed=cfg.seed)
        fits.append(fit)
        ctx.log({"event": "switch", "after": task.name, **fit})
        seen.append(task)
        scores, route = evaluate_routed(model, ctx.tokenizer, switch, features_of, seen, is_seq2seq=ctx.is_seq2seq,
                                        n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size)
        stages.append(task.name)
        evals.append(scores)
        routing.append(route)
        ctx.progress(f"[retain] after {task.name}: routing {route['accuracy']:.1f}%, "
                     + ", ".join(f"{n} {e['score']:.1f}" for n, e in scores.items()))
    switch.save(ctx.staging / "switch")
    return {"stages": stages, "evals": evals, "routing": routing, "switch_fit": fits, "features_fingerprint": features.fingerprint}


# -------------------------------------------------------------------- main
def run_continual(cfg: ContinualConfig, task_dirs: list[str], *, progress=print, command: str | None = None,
                  model_given: bool = True) -> Path:
    """Train, measure and write ``cfg.output`` (atomically). ``model_given``: False takes the base from the registry."""
    from retain.continual.registry import KIND, REGISTRY_FILE, check_base, read_info
    from retain.continual.report import write_results
    from retain.models import load_model
    from retain.run import check_output, commit, staging_dir, verify_manifest
    from retain.train import library_versions

    t0 = time.time()
    if not task_dirs:
        raise RetainError("--tasks: give at least one task folder")
    if cfg.replay_ratio >= 1:
        raise RetainError(f"--replay-ratio must be below 1 (the share of each stage's data drawn from the buffer), got {cfg.replay_ratio}")
    overrides = read_task_config(cfg.task_config)
    prev, info, old = None, None, []
    if cfg.resume_from:
        if cfg.method != "switchcit":
            raise RetainError(f"--resume-from adds tasks to a SwitchCIT registry; it does not apply to --method {cfg.method}")
        prev = Path(cfg.resume_from)
        info = read_info(prev)
        verify_manifest(prev)
        old = [_old_task(spec) for spec in info["tasks"]]
        cfg.feature_model = info["feature_model"]["spec"]
    if not cfg.output and prev is None:
        raise RetainError("--output is required")
    out = Path(cfg.output) if cfg.output else prev
    tasks = load_tasks(task_dirs, overrides)
    clash = {t.name for t in tasks} & {t.name for t in old}
    if clash:
        raise RetainError(f"--tasks: task '{sorted(clash)[0]}' is already in the registry {prev}")
    same = prev is not None and out.resolve() == prev.resolve()
    check_output(out, overwrite=cfg.overwrite or same, resume=False)

    if prev is not None and not model_given:
        cfg.model = info["base"]["spec"]
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    fingerprint = loaded.fingerprint
    if prev is not None:
        check_base(info, loaded, prev)
    for t in tasks:
        t.max_new_tokens = max_new_tokens(t, loaded.tokenizer, cfg.max_new_tokens)
    max_new = {t.name: t.max_new_tokens for t in old + tasks}

    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:  # a continual run does not resume: on any failure nothing is left behind
        if prev is not None and (prev / "train_log.jsonl").is_file():
            shutil.copyfile(prev / "train_log.jsonl", staging / "train_log.jsonl")

        def log(entry: dict) -> None:
            with open(staging / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"time": round(time.time() - t0, 2), **entry}) + "\n")

        log({"event": "start", "method": cfg.method, "model": cfg.model, "tasks": [t.name for t in tasks],
             "resumed_from": str(prev) if prev else None})
        ctx = Context(cfg, loaded, staging, log, progress)
        if cfg.method == "switchcit":
            run = run_switchcit(ctx, old, tasks, max_new, prev, info["feature_model"]["fingerprint"] if info else None)
        else:
            run = run_baseline(ctx, tasks, max_new)
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)

        all_tasks = old + tasks
        names = [t.name for t in all_tasks]
        earlier = json.loads((prev / "results.json").read_text()) if prev is not None and (prev / "results.json").is_file() else None
        results = _results(cfg, names, [t.metric for t in all_tasks], run, earlier, command, fingerprint)
        results["training"] = ctx.records
        results["versions"] = library_versions()
        results["wall_time_s"] = round(time.time() - t0 + (earlier or {}).get("wall_time_s", 0), 2)
        if cfg.method == "switchcit":
            registry = {
                "kind": KIND, "base": {"spec": cfg.model, "fingerprint": fingerprint, "is_seq2seq": loaded.is_seq2seq},
                "feature_model": {"spec": cfg.feature_model, "fingerprint": run["features_fingerprint"]},
                "tasks": [t.spec() for t in all_tasks], "config": to_dict(cfg),
            }
            (staging / REGISTRY_FILE).write_text(json.dumps(registry, indent=2))
        write_results(staging, results)
        commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _old_task(spec: dict) -> Task:
    """A task already in the registry: its settings, and its validation data if still readable at the recorded path."""
    task = Task(spec["name"], spec["path"], metric=spec["metric"], template=spec["template"],
                max_new_tokens=spec["max_new_tokens"], constraint=spec["constraint"])
    try:
        task.validation = load_task(spec["path"], {spec["name"]: {k: spec[k] for k in ("metric", "template", "constraint")}}).validation
    except RetainError:
        task.validation = []  # evaluated as missing (None) from now on
    return task


def _results(cfg, names, metrics, run, earlier, command, fingerprint) -> dict:
    stages = list(earlier["stages"]) if earlier else []
    R = [row + [None] * (len(names) - len(row)) for row in earlier["R"]] if earlier else []
    R_se = [row + [None] * (len(names) - len(row)) for row in earlier.get("R_se", [[None] * len(r) for r in earlier["R"]])] \
        if earlier else []
    details = list(earlier.get("details", [])) if earlier else []
    routing = list(earlier.get("routing") or []) if earlier else []
    for name, ev in zip(run["stages"], run["evals"]):
        stages.append(name)
        R.append([ev[n]["score"] if n in ev else None for n in names])
        R_se.append([ev[n].get("se") if n in ev else None for n in names])
        details.append(ev)
    routing += run.get("routing", [])
    constraint = {}
    for n in names:
        vals = [d.get(n, {}).get("constraint") for d in details]
        if any(v is not None for v in vals):
            constraint[n] = vals
    res = {"method": cfg.method, "model": cfg.model, "base_fingerprint": fingerprint, "tasks": names, "metrics": metrics,
           "stages": stages, "R": R, "R_se": R_se, "n": {n: run["evals"][-1].get(n, {}).get("n") for n in names} if run["evals"] else {},
           "decoding": DECODING.record(), "summary": summarize(R), "constraint": constraint, "details": details,
           "config": to_dict(cfg), "command": command}
    if cfg.method == "switchcit":
        res["routing"] = routing
        res["switch_fit"] = (earlier or {}).get("switch_fit", []) + run["switch_fit"]
    return res
