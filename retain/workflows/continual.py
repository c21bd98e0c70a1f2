"""``retain continual``: learn tasks in order with one continual method, measure after each stage,
write results (and, for a method that keeps one, the registry) atomically."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from retain.artifacts import JsonlLog, check_output, commit, staging_dir, verify_manifest, write_json
from retain.config import to_dict
from retain.continual import general
from retain.continual import methods as registry
from retain.continual.config import ContinualConfig
from retain.continual.context import Context, Previous, max_new_tokens
from retain.continual.measure import add_figures, learnt_index
from retain.continual.registry import KIND, REGISTRY_FILE, check_base, read_info
from retain.continual.report import write_results
from retain.continual.reuse import (
    Reuse,
    adapter_options,
    adapters_source,
    base_key,
    check_adapters_flag,
    read_results,
    reused_base,
    task_training,
)
from retain.continual.tasks import Task, load_task, load_tasks, read_task_config
from retain.distributed import begin, fsdp_requested, is_main, main_only, on_main, parallelism, world
from retain.engine import check_precision
from retain.errors import RetainError
from retain.evaluation.decoding import current
from retain.models import load_model, model_options
from retain.versions import library_versions


def _previous(cfg: ContinualConfig) -> Previous | None:
    """The registry to extend (``--resume-from``), verified; None for a fresh run."""
    if not cfg.resume_from:
        return None
    if not registry.get(cfg.method).registry:
        raise RetainError(f"--resume-from adds tasks to a SwitchCIT registry; it does not apply to --method {cfg.method}")
    prev = Path(cfg.resume_from)
    info = read_info(prev, flag="--resume-from")
    verify_manifest(prev)
    cfg.feature_model = info["feature_model"]["spec"]
    return Previous(prev, info, [_old_task(spec) for spec in info["tasks"]])


def check_inputs(cfg: ContinualConfig, task_dirs: list[str]) -> tuple[Previous | None, list[Task], Path]:
    """Every check of flags and task folders, before the model is loaded."""
    if not task_dirs:
        raise RetainError("--tasks: give at least one task folder")
    registry.get(cfg.method)
    check_precision(cfg)
    if fsdp_requested():
        raise RetainError("retain continual does not run under FSDP (the switch reads hidden states from inside the model, "
                          "which FSDP keeps sharded); launch it data-parallel: accelerate launch --multi_gpu --num_processes N")
    if cfg.replay_ratio >= 1:
        raise RetainError(f"--replay-ratio must be below 1 (the share of each stage's data drawn from the buffer), got {cfg.replay_ratio}")
    if cfg.osf_rank >= 1:
        raise RetainError(f"--osf-rank must be below 1 (the share of singular directions frozen for the first task), got {cfg.osf_rank}")
    overrides = read_task_config(cfg.task_config)
    general.check(cfg, registry.get(cfg.method).registry)
    check_adapters_flag(cfg, registry.get(cfg.method))
    if cfg.base_scores:
        read_results(cfg.base_scores)
    previous = _previous(cfg)
    if not cfg.output and previous is None:
        raise RetainError("--output is required")
    out = Path(cfg.output) if cfg.output else previous.path
    tasks = load_tasks(task_dirs, overrides)
    clash = {t.name for t in tasks} & {t.name for t in (previous.tasks if previous else [])}
    if clash:
        raise RetainError(f"--tasks: task '{sorted(clash)[0]}' is already in the registry {previous.path}")
    same = previous is not None and out.resolve() == previous.path.resolve()
    check_output(out, overwrite=cfg.overwrite or same, resume=cfg.resume)
    return previous, tasks, out


def run_continual(cfg: ContinualConfig, task_dirs: list[str], *, progress=print, command: str | None = None,
                  model_given: bool = True) -> Path:
    """Train, measure and write ``cfg.output`` (atomically). ``model_given``: False takes the base from the registry.

    Under a launch of N processes every process runs this (training is data-parallel, evaluation shared out)
    and the main process writes."""
    t0 = time.time()
    begin(cfg.deepspeed)
    progress = main_only(progress)
    previous, tasks, out = check_inputs(cfg, task_dirs)
    if previous is not None and not model_given:
        cfg.model = previous.info["base"]["spec"]
    loaded = load_model(cfg.model, **model_options(cfg))
    fingerprint = loaded.fingerprint  # of the base as loaded: training changes (or wraps) the model in place
    if previous is not None:
        check_base(previous.info, loaded, previous.path)
    for t in tasks:
        t.max_new_tokens = max_new_tokens(t, loaded.tokenizer, cfg.max_new_tokens)
    reuse = _reuse(cfg, fingerprint, tasks, loaded.tokenizer)
    staging = staging_dir(out)
    on_main(_fresh, staging, cfg.resume)
    _same_run(staging, cfg)
    log = _log(cfg, previous, staging, t0)
    try:  # with --save-every an interrupted run is kept for --resume; otherwise nothing is left behind
        _run(cfg, loaded, fingerprint, previous, tasks, staging, progress, command, log, reuse)
        on_main(commit, staging, out)
    except BaseException as e:
        if is_main() and not cfg.save_every:
            shutil.rmtree(staging, ignore_errors=True)
        elif staging.is_dir():  # where the clock of the kept run stopped, for the wall time of its --resume
            log({"event": "stopped", "reason": type(e).__name__})
        raise
    return out


def _reuse(cfg: ContinualConfig, fingerprint: str, tasks: list[Task], tokenizer) -> Reuse:
    """This run's base key, and what it takes from earlier runs (``--base-scores``, ``--adapters-from``), checked."""
    out = Reuse(base_key(cfg, fingerprint, tasks, tokenizer))
    if cfg.base_scores:
        out.base, out.base_from = reused_base(cfg.base_scores, out.key), cfg.base_scores
    if cfg.adapters_from:
        out.adapters = adapters_source(cfg, tasks, fingerprint, world()[1])
    return out


def _fresh(staging: Path, resume: bool) -> None:
    if not resume:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)


def run_settings(config: dict) -> dict:
    """The options that define a run (a config as ``results.json`` records it): all but --resume and --overwrite,
    as JSON values. ``--resume`` continues only a run with the same ones (bench/cit.py skips a finished one). Nor
    --adapters-from and --base-scores: they say where verified-identical work is taken from, not what the run is."""
    skip = ("resume", "overwrite", "adapters_from", "base_scores")
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in skip}))


def _same_run(staging: Path, cfg: ContinualConfig) -> None:
    """--resume continues the same run only: its settings are recorded when it starts and compared on --resume."""
    settings = run_settings(to_dict(cfg))
    f = staging / "checkpoints" / "settings.json"
    if cfg.resume and f.is_file():
        old = json.loads(f.read_text())
        diff = sorted(k for k in settings.keys() | old.keys() if settings.get(k) != old.get(k))
        if diff:
            raise RetainError(f"--resume: {staging} holds a run with other settings ({', '.join(diff)}); "
                              "rerun its own command with --resume, or drop --resume to start afresh")
    f.parent.mkdir(parents=True, exist_ok=True)
    on_main(write_json, f, settings)


def _log(cfg, previous: Previous | None, staging: Path, t0: float) -> JsonlLog:
    """The run's train_log.jsonl: a registry's log continues (``--resume-from``); an interrupted run's log and
    clock continue (``--resume``)."""
    resumed = cfg.resume and (staging / "train_log.jsonl").is_file()
    if previous is not None and (previous.path / "train_log.jsonl").is_file() and not resumed:
        on_main(shutil.copyfile, previous.path / "train_log.jsonl", staging / "train_log.jsonl")
    return JsonlLog(staging / "train_log.jsonl", t0, enabled=is_main(), resume=resumed)


def _run(cfg, loaded, fingerprint: str, previous: Previous | None, tasks: list[Task], staging: Path, progress, command,
         log: JsonlLog, reuse: Reuse) -> None:
    old = previous.tasks if previous else []
    log({"event": "start", "method": cfg.method, "model": cfg.model, "tasks": [t.name for t in tasks],
         "resumed_from": str(previous.path) if previous else None})
    ctx = Context(cfg, loaded, staging, log, progress, reuse)
    ctx.start(tasks, {t.name: t.max_new_tokens for t in tasks})  # the base model: on the new tasks, the general suite
    method = ctx.method
    run = method.runner()(ctx, tasks, {t.name: t.max_new_tokens for t in old + tasks}, previous)
    on_main(_write, cfg, loaded, fingerprint, previous, tasks, staging, command, log, ctx, run)


def _write(cfg, loaded, fingerprint: str, previous: Previous | None, tasks: list[Task], staging: Path, command,
           log: JsonlLog, ctx: Context, run: dict) -> None:
    """results.json and, for a method that keeps one, registry.json (the main process)."""
    old = previous.tasks if previous else []
    method = ctx.method
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    all_tasks = old + tasks
    earlier_file = previous.path / "results.json" if previous else None
    earlier = json.loads(earlier_file.read_text()) if earlier_file is not None and earlier_file.is_file() else None
    results = _results(cfg, [t.name for t in all_tasks], [t.metric for t in all_tasks], run, earlier, command, fingerprint)
    add_figures(results, earlier, ctx.base_scores, ctx.general)
    results["training"] = ctx.records
    results["base_evaluation"] = {"key": ctx.reuse.key, "from": ctx.reuse.base_from}  # --base-scores of a later run reads it
    if ctx.reuse.adapters:
        results["adapters_from"] = ctx.reuse.adapters
    results["versions"] = library_versions()
    results["world_size"], results["parallelism"] = world()[1], parallelism()
    results["wall_time_s"] = round(log.elapsed() + (earlier or {}).get("wall_time_s", 0), 2)
    if method.registry:
        trained = task_training(previous.path, previous.info) if previous else {}
        here = adapter_options(to_dict(cfg), world()[1])  # what each new task's adapter was trained with (--adapters-from)
        info = {
            "kind": KIND, "base": {"spec": cfg.model, "fingerprint": fingerprint, "is_seq2seq": loaded.is_seq2seq},
            "feature_model": {"spec": cfg.feature_model, "fingerprint": run["features_fingerprint"]},
            "tasks": [{**t.spec(), "training": trained.get(t.name, here)} for t in all_tasks],
            "config": to_dict(cfg), "general": run.get("general"),
        }
        write_json(staging / REGISTRY_FILE, info)
    write_results(staging, results)


def _old_task(spec: dict) -> Task:
    """A task already in the registry: its settings, and its validation data if still readable at the recorded path."""
    task = Task(spec["name"], spec["path"], metric=spec["metric"], template=spec["template"],
                max_new_tokens=spec["max_new_tokens"], constraint=spec["constraint"], source_prefix=spec.get("source_prefix"))
    try:
        keys = ("metric", "template", "constraint", "source_prefix")
        task.validation = load_task(spec["path"], {spec["name"]: {k: spec.get(k) for k in keys}}).validation
    except RetainError:
        task.validation = []  # evaluated as missing (None) from now on
    return task


def _matrix(earlier: dict | None, key: str, width: int) -> list[list]:
    """An earlier run's R (or R_se) rows, widened to ``width`` tasks."""
    if not earlier:
        return []
    rows = earlier.get(key) or [[None] * len(r) for r in earlier["R"]]
    return [row + [None] * (width - len(row)) for row in rows]


def _results(cfg, names, metrics, run, earlier, command, fingerprint) -> dict:
    stages = list(earlier["stages"]) if earlier else []
    R, R_se = _matrix(earlier, "R", len(names)), _matrix(earlier, "R_se", len(names))
    details = list(earlier.get("details", [])) if earlier else []
    routing = list(earlier.get("routing") or []) if earlier else []
    for name, ev in zip(run["stages"], run["evals"]):
        stages.append(name)
        learnt = learnt_index(names, name)  # a column after it is the next task, scored before it is learnt (FWT)
        R.append([ev[n]["score"] if n in ev and j <= learnt else None for j, n in enumerate(names)])
        R_se.append([ev[n].get("se") if n in ev and j <= learnt else None for j, n in enumerate(names)])
        details.append(ev)
    routing += run.get("routing", [])
    constraint = {}
    for j, n in enumerate(names):
        vals = [d.get(n, {}).get("constraint") if j <= learnt_index(names, st) else None for st, d in zip(stages, details)]
        if any(v is not None for v in vals):
            constraint[n] = vals
    res = {"method": cfg.method, "model": cfg.model, "base_fingerprint": fingerprint, "tasks": names, "metrics": metrics,
           "stages": stages, "R": R, "R_se": R_se, "n": {n: run["evals"][-1].get(n, {}).get("n") for n in names} if run["evals"] else {},
           "decoding": current().record(), "summary": None, "constraint": constraint, "details": details,
           "config": to_dict(cfg), "command": command}  # "summary", "transfer", "general": measure.add_figures
    if "routing" in run:  # switchcit's switch, or arrow's
        res["routing"] = routing
    if "switch_fit" in run:
        res["switch_fit"] = (earlier or {}).get("switch_fit", []) + run["switch_fit"]
    return res
