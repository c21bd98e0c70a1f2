"""Train methods side by side with one budget, evaluate all, write table and plots.

Output directory ``DIR``::

    compare.json          the settings (model, data sha256, suite, shots, training options)
    runs/METHOD/          each trained method, a normal run directory (retain train)
    evals/METHOD.json     each method's evaluation
    results.json          everything, per method
    results.md            the paper's table layout, one table per shot count
    tradeoff.png          tuned-task score vs Norm. Avg., one point per method
    tasks.png             per-task scores, one bar per method
    manifest.json         sha256 of every file

While working, everything lives in the hidden sibling ``.DIR.partial``; it is
renamed to ``DIR`` when complete. Resumable: rerunning the same command after
an interruption continues from ``.DIR.partial``; rerunning it on a complete
``DIR`` (e.g. with more methods) reuses every method already trained and
evaluated there. Different settings are refused (``--overwrite`` starts over).

Methods: ``base`` (no training), ``full``, ``prompt``, ``lora``, ``promot``,
``joint``, any of them with ``-1shot`` (``--one-shot``: a natural-language
training example after the prompt, e.g. ``promot-1shot``), and ``wise-ft``:
post-hoc interpolation ``(1-a) base + a full`` at ``--wise-alphas`` (no
training; uses the ``full`` run, trained if missing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from retain.config import METHOD_NAMES
from retain.evaluation.decoding import DECODING
from retain.errors import RetainError
from retain.run import sha256_file

SETTINGS = "compare.json"
RESULTS_FORMAT = 2  # 2: per-item units, standard errors, paired intervals


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise RetainError("--methods: give at least one method, e.g. base,full,promot")
    for m in methods:
        if m in ("base", "wise-ft"):
            continue
        name = m[:-6] if m.endswith("-1shot") else m
        if name not in METHOD_NAMES:
            raise RetainError(f"--methods: unknown method '{m}' (choose from base, {', '.join(METHOD_NAMES)}, "
                              "any of those with -1shot, wise-ft)")
    return list(dict.fromkeys(methods))


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise RetainError(f"--wise-alphas: expected numbers like 0.25,0.5,0.75, got '{text}'") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise RetainError(f"--wise-alphas: expected numbers in [0, 1], got '{text}'")
    return alphas


def task_name(train_file) -> str:
    """A readable name for the tuned task: the file's stem, or its folder's for train.jsonl."""
    if not train_file:
        return "tuned"
    p = Path(train_file).resolve()
    return (p.parent.name if p.stem in ("train", "training") else p.stem) or "tuned"


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def _prepare_dir(out: Path, settings: dict, overwrite: bool) -> Path:
    """Return the staging dir to work in (resuming what can be resumed)."""
    from retain.run import staging_dir

    staging = staging_dir(out)
    if out.exists() and not out.is_dir():
        raise RetainError(f"--output: {out} exists and is not a directory")
    for d in (staging, out):
        if not d.is_dir() or not any(d.iterdir()):
            continue
        if not (d / SETTINGS).is_file():
            if d is out:
                raise RetainError(f"--output: {out} exists, is not empty and is not a retain compare directory; choose another path")
            shutil.rmtree(d)
            continue
        old = json.loads((d / SETTINGS).read_text())
        diff = next((k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)), None)
        if diff is not None:
            if not overwrite:
                raise RetainError(f"--output: {d} holds a comparison with different settings ('{diff}': "
                                  f"{old.get(diff)!r} there, {settings.get(diff)!r} now); pass --overwrite to start over")
            shutil.rmtree(d)
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RetainError(f"--output: cannot write to {parent} (permission denied)")
    if out.is_dir() and (out / SETTINGS).is_file():
        if staging.exists():  # a complete DIR and an interrupted continuation: keep the newer work
            shutil.rmtree(out)
        else:
            (out / "manifest.json").unlink(missing_ok=True)
            os.replace(out, staging)
    elif out.is_dir():
        out.rmdir()  # empty
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "runs").mkdir(exist_ok=True)
    (staging / "evals").mkdir(exist_ok=True)
    _write_json(staging / SETTINGS, settings)
    return staging


def compare(cfg, *, methods: list[str], suite: str, shots: list[int], examples: int | None, tuned_examples: int,
            out: Path, seed: int = 0, wise_alphas: list[float] = (0.25, 0.5, 0.75), overwrite: bool = False,
            batch_size: int = 32, title: str = "Comparison", tuned_name: str | None = None, log=print,
            trials: int = 1, seeds: int = 1) -> dict:
    """Train (cfg: TrainConfig, method/output ignored) and evaluate every method; returns results.

    ``trials``: draws of demonstrations (and test items) per suite task; ``seeds``: trainings of every trained
    method with seeds ``cfg.seed + s``. Both enter the standard errors and the paired intervals."""
    from retain.data import TaskFormat, check_template, load_jsonl
    from retain.evaluation.harness import TunedSpec, evaluate_all, output_space
    from retain.evaluation.suite import load_suite
    from retain.data import template_fields
    from retain.evaluation.metrics import resolve_metric

    out = Path(out)
    if not cfg.train:
        raise RetainError("--train is required")
    if not cfg.validation:
        raise RetainError("--validation is required (the tuned task is scored on it)")
    cfg.template = check_template(cfg.template)
    fields = template_fields(cfg.template)
    train_rows = load_jsonl(cfg.train, fields=fields, flag="--train")
    val_rows = load_jsonl(cfg.validation, fields=fields, flag="--validation")
    tasks = load_suite(suite, examples=examples)
    for t in tasks:
        t.demos(seed, max(t.shots or shots), max(t.shots or shots))
    metric = resolve_metric(cfg.metric, [r["output"] for r in train_rows])
    space = output_space(train_rows)
    train_opts = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("method", "output", "one_shot", "resume", "overwrite", "train", "validation")}
    settings = {"model": cfg.model, "train_sha256": sha256_file(cfg.train), "validation_sha256": sha256_file(cfg.validation), "suite": suite,
                "shots": shots, "examples": examples, "tuned_examples": tuned_examples, "seed": seed, "train_options": train_opts,
                "trials": trials, "seeds": seeds, "results_format": RESULTS_FORMAT, "decoding": DECODING.record()}
    if suite != "builtin":
        settings["suite_sha256"] = hashlib.sha256(json.dumps([(t.name, t.template, t.metric, t.mode, t.examples) for t in tasks],
                                                             sort_keys=True).encode()).hexdigest()
    staging = _prepare_dir(out, settings, overwrite)
    tuned_name = tuned_name or task_name(cfg.train)
    evals: dict[str, dict] = {}

    def evaluated(name: str) -> dict | None:
        p = staging / "evals" / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def save(name: str, res: dict) -> None:
        res["method"] = name
        _write_json(staging / "evals" / f"{name}.json", res)
        evals[name] = res
        log(f"[compare] {name}: tuned {res['tuned']['score'] if res.get('tuned') else '-'}, "
            f"Norm. Avg. {res['norm_avg']}, format rate {res['format_rate']}")

    def run_dir(method: str, s: int = 0) -> Path:
        label = seeded(method, s)
        d = staging / "runs" / label
        if (d / "run.json").is_file():
            log(f"[compare] {label}: already trained, reusing {d}")
            return d
        from retain.train import train

        one_shot = method.endswith("-1shot")
        name = method[:-6] if one_shot else method
        c = dataclasses.replace(cfg, method=name, one_shot=one_shot, output=str(d), overwrite=False, seed=cfg.seed + s,
                                resume=(staging / "runs" / f".{label}.partial").is_dir())
        log(f"[compare] training {label}")
        return train(c, progress=lambda m: log(m))

    base_loaded = None

    def base():
        nonlocal base_loaded
        if base_loaded is None:
            from retain.models import load_model

            base_loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
        return base_loaded

    plain_fmt = lambda s2s: TaskFormat(cfg.template, None, s2s)  # noqa: E731
    order = []
    for method in methods:
        if method == "wise-ft":
            order += [f"wise-ft-{a:g}" for a in wise_alphas]
        else:
            order.append(method)
    common = dict(seed=seed, batch_size=batch_size, progress=True, space=space, trials=trials)
    for name in order:
        for s in range(1 if name == "base" else seeds):
            label = seeded(name, s)
            prev = evaluated(label)
            if prev is not None:
                log(f"[compare] {label}: already evaluated")
                evals[label] = prev
                continue
            if name == "base":
                b = base()
                tuned = TunedSpec(tuned_name, val_rows[:tuned_examples], plain_fmt(b.is_seq2seq), metric, _max_new(b.tokenizer, train_rows, cfg))
                save(label, evaluate_all(b.model, b.tokenizer, tasks, shots, is_seq2seq=b.is_seq2seq, tuned=tuned, **common))
            elif name.startswith("wise-ft-"):
                alpha = float(name[len("wise-ft-"):])
                from retain.run import load_run

                ft = load_run(run_dir("full", s))
                b = base()
                model = interpolate(b.model, ft.model, alpha)
                tuned = TunedSpec(tuned_name, val_rows[:tuned_examples], plain_fmt(b.is_seq2seq), metric, ft.info.get("max_new_tokens", 32))
                save(label, evaluate_all(model, b.tokenizer, tasks, shots, is_seq2seq=b.is_seq2seq, tuned=tuned, train_seed=s, **common))
                del model, ft
            else:
                from retain.run import load_run

                r = load_run(run_dir(name, s))
                tuned = TunedSpec(tuned_name, val_rows[:tuned_examples], r.format, r.info.get("metric", metric), r.info.get("max_new_tokens", 32))
                save(label, evaluate_all(r.model, r.tokenizer, tasks, shots, is_seq2seq=r.is_seq2seq, tuned_model=r.model_for(True),
                                         tuned=tuned, tuned_prompt=r.has_prompt, train_seed=s, **common))
                del r
    results = {"title": title, "shots": shots, "tuned_task": tuned_name, "metric": metric,
               "output_space": space.describe() if space else None,
               "setup": {"model": cfg.model, "train": cfg.train, "validation": cfg.validation, "suite": suite,
                         "shots": ",".join(map(str, shots)), "suite items per task": examples or "suite default",
                         "tuned-task items": min(tuned_examples, len(val_rows)), "steps (single-stage)": cfg.max_steps,
                         "promot steps": f"{cfg.stage1_steps} + {cfg.stage2_steps}", "seed": seed,
                         "draws": f"{trials} demonstration draw(s) x {seeds} training seed(s)", "decoding": "greedy, first line"},
               "decoding": DECODING.record(), "trials": trials, "seeds": seeds,
               "methods": {name: merge_seeds([evals[seeded(name, s)] for s in range(1 if name == "base" else seeds)])
                           for name in order}}
    from retain.evaluation.stats import compare_methods

    results["paired"] = compare_methods(results)
    write_outputs(results, staging, title)
    from retain.run import commit

    for p in staging.rglob("*.partial"):
        shutil.rmtree(p, ignore_errors=True)
    commit(staging, out)
    return results


def seeded(method: str, s: int) -> str:
    """The name of a method's run/eval for training seed index ``s`` (0: the method's own name)."""
    return method if s == 0 else f"{method}@seed{s}"


def merge_seeds(evals: list[dict]) -> dict:
    """One method's evaluation over its training seeds: units of every seed together, scores as their mean."""
    if len(evals) == 1:
        return evals[0]
    import copy

    from retain.evaluation.stats import attach_summaries

    out = copy.deepcopy(evals[0])
    for other in evals[1:]:
        for name, rec in out["tasks"].items():
            for k, units in rec.get("units", {}).items():
                units += other["tasks"][name]["units"][k]
        if out.get("tuned") and other.get("tuned"):
            out["tuned"]["units"] += other["tuned"]["units"]
    for name, rec in out["tasks"].items():
        for k in rec["scores"]:
            rec["scores"][k] = round(sum(e["tasks"][name]["scores"][k] for e in evals) / len(evals), 4)
    for k in out["norm_avg"]:
        vals = [e["norm_avg"][k] for e in evals if e["norm_avg"].get(k) is not None]
        out["norm_avg"][k] = round(sum(vals) / len(vals), 4) if vals else None
    if out.get("tuned"):
        out["tuned"]["score"] = round(sum(e["tuned"]["score"] for e in evals) / len(evals), 4)
    out["seeds"] = len(evals)
    return attach_summaries(out)


def write_outputs(results: dict, root: Path, title: str) -> None:
    from retain.evaluation.report import markdown_report, plot

    _write_json(root / "results.json", results)
    (root / "results.md").write_text(markdown_report(results, title))
    plot(results, root)


def _max_new(tokenizer, rows, cfg) -> int:
    from retain.evaluation.decoding import answer_budget

    return cfg.max_new_tokens or answer_budget(tokenizer, [r["output"] for r in rows])


def interpolate(base_model, tuned_model, alpha: float):
    """WiSE-FT: a copy of the model with weights (1 - alpha) * base + alpha * tuned."""
    import copy

    import torch

    tuned_state = tuned_model.state_dict()
    model = copy.deepcopy(base_model)
    done: set[int] = set()  # tied weights (embeddings = LM head) are one tensor under two names: move it once
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in tuned_state and p.dtype.is_floating_point and p.data_ptr() not in done:
                done.add(p.data_ptr())
                p.copy_((1.0 - alpha) * p + alpha * tuned_state[name].to(p.dtype))
    return model.eval()
