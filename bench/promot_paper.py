"""The ProMoT paper at small scale, complete (issue 12, points 5 and 6), on the embedded model.

Two steps, each a list of cached units of work (one training configuration and its evaluation, one
analysis), under ``--work`` (default runs/promot_paper/UNIT/, git-ignored):

``search`` (point 5): ProMoT's recipe searched with the same budget of trained configurations as full
fine-tuning's own knobs, on RTE (the paper's tuned task: its True/False labels make format specialization
measurable on every other task, and its validation split is the one the paper reports on), choosing on
RTE's validation split and on ../shared/data tasks only (the suite, drawn with seed 1 so the paper run's
items, seed 0, are others). Full FT: lr {1e-5, 3e-5, 1e-4, 3e-4} x steps {20, 60} (8 configurations);
ProMoT: a centre (100-token text-initialised prompt, 60 stage-1 steps at lr 3e-2, 60 stage-2 steps at
lr 1e-4) and one change at a time: stage-2 lr 3e-5 and 3e-4, prompt length 20, 20 stage-1 steps (the
stage-1 contrast, shorter: cheaper than a longer one and it still says whether stage 1's length matters),
stage-1 lr 0.3, vocabulary init, + 1-shot (8 configurations). Last weights kept (fine-tuning strength is
what is searched). Scored 4-shot only, on 30 items per suite task (``--search-examples``; 330 items for
Norm. Avg.) and all 277 RTE validation items (the choice rests on them). Why 60 model-tuning steps: on SST-2,
100 steps at lr 1e-4 already cost full FT 22.8 Norm. Avg. points (issue 12), so lr 1e-4/3e-4 x 60 steps reach
the goal's "full FT loses 10+" strength while 20 steps and the lower lrs give the weak end of the frontier.
Writes the frontier (tuned-task score vs Norm. Avg., intervals) and checks the issue's goal mechanically
(``goal``): holds / does not hold, with the numbers; and the recipe chosen.

``paper`` (point 6): at the chosen recipe (``--recipe search``; ``--recipe default`` uses the search's
centre without waiting for it), RTE and En-Fr with base / full / promot / promot-1shot, multi-task (RTE +
En-Fr) promot and full, scored 1- and 4-shot on bench/paper_suite.yaml (10 tasks of ../shared/data/icl +
En-De, 100 items each) and on the tuned task (its whole validation split up to 500 items); `retain analyze
format-curve` (4 points per model-tuning stage, 1-shot, 20 items per suite task and 50 RTE items per point) and
`gradients` (the first half of model tuning, 7 probe points) on RTE, each twice: at the chosen recipe and at the
search's centre, where full FT loses 18 Norm. Avg. points (lr 1e-4; units ``-strong``: Fig. 2 and 3 describe a
fine-tuning that specializes, and at the chosen recipe neither method forgets). Writes docs/results/promot_paper.md (+ .json,
pngs): the paper's Tables 3/4/5 beside ours, the plots, and a statement per paper claim (holds / does not hold /
undecided at 95%, from the paired intervals). ``all``: both steps in one command, each paper unit started once
every search unit has finished and the choice is written (with ``--recipe default`` they do not wait).

Every unit is skipped when it finished with the same options, continued when interrupted (retain compare
reuses finished runs and evaluations and resumes an interrupted training with ``retain train --resume``'s
mechanism; an analysis restarts), refused when recorded with other options (``--overwrite``).
``--aggregate-only`` rebuilds the docs from whatever finished ("not yet run" for the rest). ``--jobs N``
(default: one per CPU, 2 here) runs N units at once, each its own process on cpus/N threads
(``bench/_common.run_jobs``), output in WORK/logs/UNIT.log, one line per start and finish here; Ctrl-C or
SIGTERM stops them with their checkpoints (rerun the same command to continue). A finished unit's model weights
(~540 MB each) are deleted, its evaluations kept: no later unit or analysis loads a trained run of another unit
(``--keep-weights`` keeps them).

Cost, from ``probe`` (bench/results/promot_paper_probe.json, 2026-11-30, one thread while the 2-core machine ran
at load ~4): a packed RTE step 17.9 s (full FT), 15.0 s (stage 1, 100-token prompt), 19.3 s (stage 2); En-Fr
4.7 s; 0.42 s per suite item, 1.25 s per RTE item. Per unit (CPU hours, one thread): search-base 0.13, full FT
0.23 (20 steps) / 0.43 (60), ProMoT 0.71 (0.54 with 20 stage-1 steps): the search 8.3 h; paper: RTE base 0.35 /
full 0.65 / promot 0.93 / promot-1shot 0.93, En-Fr 0.43 / 0.51 / 0.58 / 0.58, multi-task full 1.08 / promot 1.61,
format curve 1.43, gradients 0.88, each twice (at the recipe and -strong): 12.3 h at the centre (the most any choice costs). With
``--jobs 2`` (two units at once, one thread each) about half in wall time: ~4.2 h for the search, ~6 h for the
paper, ~6 sessions of 1.5 h for both (was ~39 + ~31 CPU h, 300-step stages and a 1000-step stage 1). Measured
(2026-11-30, this machine under load ~2.5 from another job, 4 full-FT steps on an En-Fr batch of 8 after a warm-up):
3.6 s per step in each of two one-thread processes at once (the probe's one-thread rate, 4.7 s, kept), 27 s per
step in one process on two threads (OpenMP threads thrash on oversubscribed cores).
A quiet machine should take less (the engine's 71 tokens/s at one thread, bench/results/train_throughput.json,
gives ~9 s per RTE step). ``--only PATTERN`` runs a subset of the units.

    HF_HUB_OFFLINE=1 python bench/promot_paper.py all                 # points 5 and 6, 2 units at once, resumable
    HF_HUB_OFFLINE=1 python bench/promot_paper.py search              # point 5 alone
    HF_HUB_OFFLINE=1 python bench/promot_paper.py paper               # point 6, after the search
    python bench/promot_paper.py all --aggregate-only                 # docs from what finished
    OMP_NUM_THREADS=1 python bench/promot_paper.py probe              # the cost estimate (~3 min)
    python bench/promot_paper.py all --model tiny-random-llama --steps 2 --examples 3 --tuned-examples 4 --work /tmp/pp --docs /tmp/ppd
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._common import ROOT, SHARED, Units

SUITE = "bench/paper_suite.yaml"  # relative to the repository root (the script runs there): units resume from any checkout
TASKS = {"rte": {"template": "{input}\nAnswer:", "metric": "accuracy", "max_length": 256},
         "en_fr": {"template": "English: {input}\nFrench:", "metric": "chrf", "max_length": 64}}
COMMON = {"batch_size": 8, "eval_every": 0, "save_every": 50, "eval_batch_size": 32, "seed": 0, "log_every": 10}
STEP_FIELDS = ("max_steps", "stage1_steps", "stage2_steps")
FULL_GRID = {f"lr={lr:g},steps={s}": {"lr": lr, "max_steps": s} for s in (20, 60) for lr in (1e-5, 3e-5, 1e-4, 3e-4)}
CENTRE = {"prompt_length": 100, "prompt_init": "text", "stage1_steps": 60, "stage1_lr": 3e-2, "stage2_steps": 60,
          "stage2_lr": 1e-4}
DEFAULT_FULL = "lr=0.0001,steps=60"  # full FT at the centre's model-tuning budget (--recipe default)
PROMOT_GRID = {"centre": {}, "stage2_lr=3e-5": {"stage2_lr": 3e-5}, "stage2_lr=3e-4": {"stage2_lr": 3e-4},
               "prompt_length=20": {"prompt_length": 20}, "stage1_steps=20": {"stage1_steps": 20},
               "stage1_lr=0.3": {"stage1_lr": 0.3}, "prompt_init=vocab": {"prompt_init": "vocab"}, "1shot": {"one_shot": True}}
SEARCH_SEED, PAPER_SEED = 1, 0
# CPU hours per unit (2 cores, OMP_NUM_THREADS=1, SmolLM2-135M), from `probe` (bench/results/promot_paper_probe.json):
# seconds per optimizer step on RTE batches (full FT / stage 1 with a 100-token prompt / stage 2) and per evaluation.
COST_FILE = ROOT / "bench" / "results" / "promot_paper_probe.json"


def train_options(args, task: str, **over) -> dict:
    """The training options of one unit (``TrainConfig`` fields), ``--steps`` capping every step count."""
    opts = {**COMMON, **TASKS[task], "model": args.model, **over}
    if args.steps:
        opts.update({f: args.steps for f in STEP_FIELDS})
    return opts


def eval_options(args, seed: int, shots: str, examples: int | None) -> dict:
    return {"suite": SUITE, "shots": shots, "examples": examples, "tuned_examples": args.tuned_examples,
            "seed": seed, "num_beams": args.num_beams}


def compare_unit(units: Units, name: str, task: str, method: str, train: dict, ev: dict, log) -> dict:
    """One method (or base) trained with ``train`` and scored (``retain compare``'s workflow in UNIT/compare)."""
    from retain.config import TrainConfig
    from retain.workflows.compare import compare
    from retain.workflows.options import CompareOptions

    def work(d: Path) -> dict:
        cfg = TrainConfig(**train, train=str(SHARED / task / "train.jsonl"),
                          validation=str(SHARED / task / "validation.jsonl"), output=str(d / "compare"))
        res = compare(cfg, CompareOptions(methods=method, **ev), out=d / "compare", title=name, tuned_name=task, log=log)
        return {"eval": str(Path("compare") / "evals" / f"{method}.json"), "norm_avg": res["methods"][method]["norm_avg"],
                "tuned": (res["methods"][method].get("tuned") or {}).get("score")}

    return units.run(name, unit_options("compare", task, method, train, ev), work)


def multitask_unit(units: Units, name: str, method: str, train: dict, ev: dict, log) -> dict:
    """Multi-task (RTE + En-Fr) training, then each task scored as the tuned one under its own prompt, with the suite
    (without any prompt; the format rate in that task's output space)."""
    def work(d: Path) -> dict:
        from retain.artifacts import write_json
        from retain.config import TrainConfig
        from retain.workflows.train import train as train_run

        run = d / "run"
        if not (run / "run.json").is_file():
            spec = d / "tasks.json"  # several tasks with their own template and metric (retain train --tasks)
            write_json(spec, {"tasks": [{"name": t, "train": str(SHARED / t / "train.jsonl"), "template": TASKS[t]["template"],
                                         "validation": str(SHARED / t / "validation.jsonl"), "metric": TASKS[t]["metric"]}
                                        for t in TASKS]})
            cfg = TrainConfig(**train, method=method.removesuffix("-1shot"), one_shot=method.endswith("-1shot"),
                              tasks=str(spec), output=str(run), resume=(d / ".run.partial").is_dir())
            train_run(cfg, progress=log)
        out = {}
        for task in TASKS:
            path = d / f"eval-{task}.json"
            if not path.is_file():
                write_json(path, _score_task(run, task, ev))
            out[task] = path.name
        return {"evals": out}

    return units.run(name, unit_options("multitask", None, method, train, ev), work)


def _score_task(run_dir: Path, task: str, ev: dict) -> dict:
    """A multi-task run scored as ``retain eval --run RUN --task TASK`` scores it: the suite without the prompt, ``task``
    with its own (its validation file and output space as the run records them)."""
    from retain.workflows.evaluate import evaluate
    from retain.workflows.options import EvalCommand

    o = EvalCommand(run=str(run_dir), task=task, suite=ev["suite"], shots=ev["shots"], examples=ev["examples"],
                    tuned_examples=ev["tuned_examples"], seed=ev["seed"], num_beams=ev["num_beams"])
    return evaluate(o, log=lambda *_: None)


def analysis_unit(units: Units, name: str, kind: str, train: dict, opts: dict, log) -> dict:
    """``retain analyze format-curve|gradients`` on RTE (restarted whole if interrupted: it has no checkpoints)."""
    from retain.config import TrainConfig
    from retain.workflows import analyze
    from retain.workflows.options import CurveOptions, GradientOptions

    def work(d: Path) -> dict:
        cfg = TrainConfig(**train, train=str(SHARED / "rte" / "train.jsonl"), validation=str(SHARED / "rte" / "validation.jsonl"),
                          output=str(d / "out"), overwrite=True)
        fn, cls = (analyze.format_curve, CurveOptions) if kind == "format-curve" else (analyze.gradients, GradientOptions)
        fn(cfg, cls(**opts), log=log)
        return {"results": "out/results.json"}

    return units.run(name, unit_options(kind, "rte", None, train, opts), work)


def unit_options(kind: str, task: str | None, method: str | None, train: dict, ev: dict) -> dict:
    """The options a unit is recorded with (``Units``: same options = skipped when done, continued when started)."""
    if kind == "compare":
        return {"kind": kind, "task": task, "method": method, "train": train, "eval": ev}
    if kind == "multitask":
        return {"kind": kind, "method": method, "train": train, "eval": ev}
    return {"kind": kind, "train": train, "analysis": ev}


# ------------------------------------------------------------------ the two steps, as lists of units
def search_units(args) -> list[tuple]:
    """(unit name, kind, method, train options, eval options) of the recipe search, every one on RTE."""
    ev = eval_options(args, SEARCH_SEED, args.search_shots, min(args.examples or args.search_examples, args.search_examples))
    units = [("search-base", "compare", "base", "rte", train_options(args, "rte"), ev)]
    units += [(f"search-full-{k}", "compare", "full", "rte", train_options(args, "rte", **v), ev) for k, v in FULL_GRID.items()]
    for k, v in PROMOT_GRID.items():
        over = {**CENTRE, **{f: x for f, x in v.items() if f != "one_shot"}}
        units.append((f"search-promot-{k}", "compare", "promot-1shot" if v.get("one_shot") else "promot", "rte",
                      train_options(args, "rte", **over), ev))
    return units


def recipe(args) -> tuple[dict, dict, str]:
    """(full FT's options, ProMoT's options, where they come from) for the paper run."""
    if args.recipe == "default":
        return dict(FULL_GRID[DEFAULT_FULL]), dict(CENTRE), "the search's centre (--recipe default), not searched"
    choice = Path(args.work) / "search-choice.json"
    if not choice.is_file() and (args.aggregate_only or getattr(args, "planning", False)):  # the plan before the choice
        return dict(FULL_GRID[DEFAULT_FULL]), dict(CENTRE), "not chosen yet (the search has not finished): planned at its centre"
    if not choice.is_file():
        from retain.errors import RetainError

        raise RetainError(f"{choice}: no recipe chosen yet; finish 'search' (it writes the choice once its last unit is done) or pass --recipe default")
    c = json.loads(choice.read_text())
    return (c["full"]["options"], c["promot"]["options"],
            f"chosen by the search ([promot_paper_search.md](promot_paper_search.md); rule: {c['rule'].rstrip('.')}): full FT "
            f"{_opts(c['full']['options'])}, ProMoT {_opts(c['promot']['options'])}")


def _opts(options: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in options.items())


def paper_units(args) -> list[tuple]:
    full, promot, _ = recipe(args)
    ev = eval_options(args, PAPER_SEED, "1,4", args.examples)
    units = []
    for task in TASKS:
        units.append((f"paper-{task}-base", "compare", "base", task, train_options(args, task), ev))
        units.append((f"paper-{task}-full", "compare", "full", task, train_options(args, task, **full), ev))
        for m in ("promot", "promot-1shot"):
            units.append((f"paper-{task}-{m}", "compare", m, task, train_options(args, task, **promot), ev))
    mt = {**full, **promot, "max_length": TASKS["rte"]["max_length"]}
    for m in ("full", "promot"):
        units.append((f"paper-multitask-{m}", "multitask", m, None,
                      {k: v for k, v in train_options(args, "rte", **mt).items() if k not in ("template", "metric")}, ev))
    units += analysis_units(args, "", full, promot)
    # the same analyses where full FT forgets (the search's centre: full FT lr 1e-4 x 60 steps lost 18 Norm. Avg.
    # points there, ProMoT's stage 2 at the same lr): Fig. 2/3 are about a fine-tuning that specializes, and at the
    # chosen recipe neither method loses anything
    if args.recipe == "search":  # (--recipe default: the same units; planned before the search chooses, so always here)
        units += analysis_units(args, STRONG, dict(FULL_GRID[DEFAULT_FULL]), dict(CENTRE))
    return units


STRONG = "-strong"  # suffix of the analysis units at the strength where full FT loses 10+ points


def analysis_units(args, suffix: str, full: dict, promot: dict) -> list[tuple]:
    """``retain analyze format-curve`` and ``gradients`` on RTE for full FT and ProMoT at these options (stage 2 gets
    full FT's steps, so that both curves cover the same model-tuning budget)."""
    rte_full = train_options(args, "rte", **full, **{k: promot[k] for k in promot if k != "stage2_steps"}, stage2_steps=full["max_steps"])
    every = max(1, rte_full["max_steps"] // 3)  # 4 points of each model-tuning stage (the paper's Fig. 2: 0..300 RTE steps)
    curve = {"suite": SUITE, "shots": "1", "examples": min(args.examples or 20, 20), "tuned_examples": min(args.tuned_examples, 50),
             "seed": PAPER_SEED, "methods": "full,promot", "every": every}
    # gradients: the first half of model tuning (Fig. 3's cosine falls early), probed at 7 points of it
    short = max(1, rte_full["max_steps"] // 2)
    grads = {"methods": "full,promot", "every": max(1, short // 6), "probe_batches": 4}
    return [(f"paper-rte-format-curve{suffix}", "format-curve", None, "rte", rte_full, curve),
            (f"paper-rte-gradients{suffix}", "gradients", None, "rte", {**rte_full, "max_steps": short, "stage2_steps": short}, grads)]


def run_unit(unit: tuple, units: Units, log) -> None:
    """One unit, in this process (what each process started by ``--jobs`` runs: ``--unit NAME``)."""
    name, kind, method, task, train, ev = unit
    if kind == "compare":
        compare_unit(units, name, task, method, train, ev, log)
    elif kind == "multitask":
        multitask_unit(units, name, method, train, ev, log)
    else:
        analysis_unit(units, name, kind, train, ev, log)


def step_units(args, step: str) -> list[tuple]:
    """A step's units; ``paper`` before the search has chosen (``--recipe search``, no choice yet): planned at the
    centre, for their names only (each process reads the choice when it starts)."""
    if step == "search":
        return search_units(args)
    if args.recipe == "search" and not (Path(args.work) / "search-choice.json").is_file():
        return paper_units(argparse.Namespace(**{**vars(args), "planning": True}))
    return paper_units(args)


def child_argv(args, step: str, name: str) -> list[str]:
    """The command of one unit's process: this script with this invocation's options and ``--unit NAME``."""
    argv = [sys.executable, str(Path(__file__).resolve()), step, "--unit", name, "--model", args.model, "--work", args.work,
            "--docs", args.docs, "--recipe", args.recipe, "--tuned-examples", str(args.tuned_examples),
            "--search-shots", args.search_shots, "--search-examples", str(args.search_examples), "--num-beams", str(args.num_beams)]
    argv += ["--steps", str(args.steps)] if args.steps else []
    argv += ["--examples", str(args.examples)] if args.examples else []
    return argv + ["--overwrite"] * args.overwrite + ["--keep-weights"] * args.keep_weights


def plan_jobs(args, steps: list[str], units: Units) -> list:
    """The units still to run, as processes (``bench/_common.run_jobs``): those matching ``--only``, not finished with
    the same options; with ``--recipe search``, ``paper``'s wait for every search unit while any is to run (their
    options are known, and checked, only once the search has chosen)."""
    from fnmatch import fnmatch

    from bench._common import Job

    jobs, searched = [], []
    for step in steps:
        waits = step == "paper" and args.recipe == "search" and bool(jobs)  # jobs so far: the search's
        for unit in step_units(args, step):
            name, kind, method, task, train, ev = unit
            if args.only and not any(fnmatch(name, p.strip()) for p in args.only.split(",")):
                continue
            if step == "search":
                searched.append(name)
            if waits or not units.done(name, unit_options(kind, task, method, train, ev)):
                jobs.append(Job(name, child_argv(args, step, name), needs=tuple(searched) if waits else ()))
    return jobs


# ------------------------------------------------------------------ reading back what finished
def finished(units: Units, units_list: list[tuple]) -> dict:
    """name -> the unit's evaluation(s) (``{"eval": ...}`` or ``{task: ...}`` or the analysis results) for the units done
    with their current options; the others are left out (\"not yet run\")."""
    out = {}
    for name, kind, method, task, train, ev in units_list:
        rec = units.done(name, unit_options(kind, task, method, train, ev))
        if rec is None:
            continue
        d = units.root / name
        r = rec["result"]
        out[name] = (json.loads((d / r["eval"]).read_text()) if kind == "compare" else
                     {t: json.loads((d / p).read_text()) for t, p in r["evals"].items()} if kind == "multitask" else
                     json.loads((d / r["results"]).read_text()))
    return out


def results_of(evals: dict, task: str, shots: list[int]) -> dict:
    """A comparison's results (compare's layout) over evaluations from several units."""
    return {"shots": shots, "tuned_task": task, "metric": TASKS[task]["metric"], "title": task, "methods": evals}


def paired_vs_base(results: dict) -> dict:
    """``results["paired"]`` with each method against base only (a comparison per method: cheap for many methods)."""
    from retain.evaluation.paired import compare_methods

    out: dict = {}
    for name in results["methods"]:
        if name != "base" and "base" in results["methods"]:
            sub = compare_methods({**results, "methods": {"base": results["methods"]["base"], name: results["methods"][name]}})
            for k, comps in sub.items():
                out.setdefault(k, {}).update(comps)
    return out


def pair(results: dict, a: str, b: str, key: str, what: str = "norm_avg") -> dict | None:
    """B − A with its 95% paired interval: ``what`` = norm_avg, tuned or a suite task's name."""
    from retain.evaluation.paired import compare_methods, comparison_key

    m = results["methods"]
    if a not in m or b not in m:
        return None
    p = compare_methods({**results, "methods": {a: m[a], b: m[b]}})[key][comparison_key(a, b)]
    return p.get(what) if what in ("norm_avg", "tuned") else p["tasks"].get(what)


def format_pair(results: dict, a: str, b: str, key: str, task: str) -> dict | None:
    """B − A on the format-specialization rate (per item: the answer in the tuned task's output space), over every
    counted item of every generated suite task, with scipy's paired bootstrap interval (95%)."""
    import numpy as np
    from scipy.stats import bootstrap

    from retain.data import load_jsonl
    from retain.evaluation.harness import format_hits, output_space

    m = results["methods"]
    if a not in m or b not in m:
        return None
    space = output_space(load_jsonl(SHARED / task / "train.jsonl"))
    hits = {x: [] for x in (a, b)}
    for name in m[a]["tasks"]:
        for x in (a, b):
            for u in (m[x]["tasks"][name].get("units") or {}).get(key, []):  # counted items depend on references only
                hits[x] += [100.0 * h for h in format_hits(space, u["predictions"], u["references"])]
    ha, hb = np.array(hits[a]), np.array(hits[b])
    if len(ha) != len(hb) or len(ha) < 2:
        return None
    d = float(hb.mean() - ha.mean())
    if np.all(hb - ha == (hb - ha)[0]):  # every paired difference equal: the interval is that point (scipy gives nan)
        return {"diff": round(d, 2), "ci": [round(d, 2), round(d, 2)], "n": len(ha)}
    ci = bootstrap((ha, hb), lambda x, y: np.mean(y) - np.mean(x), paired=True, vectorized=False, n_resamples=2000,
                   random_state=0).confidence_interval
    return {"diff": round(d, 2), "ci": [round(float(ci.low), 2), round(float(ci.high), 2)], "n": len(ha)}


# ------------------------------------------------------------------ point 5: the frontier, the goal, the recipe
def search_results(done: dict, shots: list[int]) -> dict:
    evals = {"base": done["search-base"]} if "search-base" in done else {}
    for name, ev in done.items():
        for method, grid in (("full", FULL_GRID), ("promot", PROMOT_GRID)):
            key = name.removeprefix(f"search-{method}-")
            if name.startswith(f"search-{method}-") and key in grid:
                evals[f"{method}@recipe={key}"] = ev
    results = results_of(evals, "rte", shots)
    results["paired"] = paired_vs_base(results)
    return results


def majority(tuned: dict | None) -> dict | None:
    """The most frequent reference answer of a tuned-task evaluation's scored items: a model that always gives it
    scores ``rate`` (RTE's first 277 validation items: 'True', 146 = 52.71%)."""
    from collections import Counter

    refs = [r for u in ((tuned or {}).get("units") or [])[:1] for r in u["references"]]
    if not refs:
        return None
    label, count = Counter(refs).most_common(1)[0]
    return {"label": label, "count": count, "n": len(refs), "rate": round(100 * count / len(refs), 2)}


def above_majority(tuned: dict | None, maj: dict) -> dict | None:
    """Whether a tuned score is above the majority answer's rate: exact one-sided binomial test (scipy) of its correct
    answers against that rate."""
    from scipy.stats import binomtest

    n = len(((tuned or {}).get("units") or [{}])[0].get("references") or [])
    if not maj or not n:
        return None
    p = float(binomtest(round(tuned["score"] * n / 100), n, maj["rate"] / 100, alternative="greater").pvalue)
    return {"p": round(p, 4), "above": p < 0.05}


def goal(results: dict, key: str) -> dict:
    """The issue's goal, mechanically: some full-FT point losing 10+ Norm. Avg. points and some ProMoT point whose tuned
    score is not below it at 95% (paired interval of ProMoT − full reaching 0 or above), with a Norm. Avg. drop at
    most a third of full FT's and a format rate at most a quarter of it."""
    from retain.evaluation.paired import comparison_key

    m, paired = results["methods"], results.get("paired", {}).get(key, {})
    drop = lambda n: -((paired.get(comparison_key("base", n)) or {}).get("norm_avg") or {}).get("diff", float("nan"))
    rate = lambda n: (m[n].get("format_rate") or {}).get(key)
    fulls = [n for n in m if n.startswith("full@")]
    strong = [f for f in fulls if drop(f) >= 10]
    maj = majority(next((m[n]["tuned"] for n in m if m[n].get("tuned")), None))
    rows = []
    for f in strong:
        for p in (n for n in m if n.startswith("promot@")):
            t = pair(results, f, p, key, "tuned")
            rf, rp = rate(f), rate(p)
            ok = (t is not None and t["ci"][1] >= 0 and drop(p) <= drop(f) / 3 and rf is not None and rp is not None
                  and rp <= rf / 4)
            rows.append({"full": f, "promot": p, "tuned_diff": t and {"diff": t["diff"], "ci": t["ci"]},
                         "full_learnt": above_majority(m[f].get("tuned"), maj),
                         "drop_full": round(drop(f), 2), "drop_promot": round(drop(p), 2), "rate_full": rf, "rate_promot": rp,
                         "holds": bool(ok)})
    held = [r for r in rows if r["holds"]]
    return {"shots": key, "full_points_losing_10": strong, "pairs": rows, "holds": bool(held), "majority": maj,
            "vacuous": bool(held) and not any((r["full_learnt"] or {}).get("above") for r in held),
            "rule": goal.__doc__.split(": ", 1)[1].replace("\n    ", " ")}


def choose(results: dict, key: str) -> dict | None:
    """The recipe taken to the paper run: full FT's point with the best tuned score (ties: Norm. Avg.); ProMoT's point
    with the best Norm. Avg. among those whose tuned score is not below that full-FT point at 95% (else its best tuned)."""
    m = results["methods"]
    score = lambda n, what: (m[n].get("tuned") or {}).get("score", -1) if what == "tuned" else (m[n]["norm_avg"].get(key) or -1)
    fulls, promots = [n for n in m if n.startswith("full@")], [n for n in m if n.startswith("promot@")]
    if not fulls or not promots:
        return None
    f = max(fulls, key=lambda n: (score(n, "tuned"), score(n, "avg")))
    ok = [p for p in promots if (pair(results, f, p, key, "tuned") or {"ci": [0, -1]})["ci"][1] >= 0]
    p = max(ok, key=lambda n: score(n, "avg")) if ok else max(promots, key=lambda n: score(n, "tuned"))
    fk, pk = f.split("=", 1)[1], p.split("=", 1)[1]
    return {"rule": choose.__doc__.split(": ", 1)[1].replace("\n    ", " "), "shots": key,
            "full": {"name": f, "options": FULL_GRID[fk]},
            "promot": {"name": p, "options": {**CENTRE, **{k: v for k, v in PROMOT_GRID[pk].items() if k != "one_shot"}}}}


RECIPE_FIELDS = ("prompt_length", "prompt_init", "stage1_steps", "stage1_lr", "stage2_lr")  # stage2_steps: the budget


def defaults_text(choice: dict) -> str:
    """Whether retain's ProMoT defaults (``TrainConfig``) are the chosen recipe, field by field (point 5: the recipe
    found is the documented default for small models)."""
    from retain.config import TrainConfig

    d, want = TrainConfig(), choice["promot"]["options"]
    off = [f"{f} (default {getattr(d, f)!r}, recipe {want[f]!r})" for f in RECIPE_FIELDS if f in want and getattr(d, f) != want[f]]
    return (f"retain's defaults (`retain train --help`) {'differ from this recipe: ' + ', '.join(off) if off else 'are this recipe'} "
            f"in {', '.join(RECIPE_FIELDS)}; stage 2's steps are the budget (default {d.stage2_steps}, equal to full FT's "
            f"--max-steps {d.max_steps}; the search ran {want.get('stage2_steps')}).")


def goal_text(g: dict) -> str:
    head = f"**Goal ({g['shots']}-shot): {'holds' if g['holds'] else 'does not hold'}.** Rule: {g['rule']}"
    if not g["full_points_losing_10"]:
        return head + "\n\nNo full-FT point loses 10+ Norm. Avg. points: the goal's premise is not reached."
    maj = g.get("majority")
    lines = [head, "", "| full FT | ProMoT | ProMoT − full, tuned [95%] | full FT above the majority answer (p) | drop full | "
             "drop ProMoT | format full | format ProMoT | holds |", "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in g["pairs"]:
        t, learnt = r["tuned_diff"], r.get("full_learnt")
        cell = "-" if not t else f"{t['diff']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]"
        above = "-" if not learnt else f"{'yes' if learnt['above'] else 'no'} ({learnt['p']:.3g})"
        lines.append(f"| {r['full']} | {r['promot']} | {cell} | {above} | "
                     f"{r['drop_full']:.2f} | {r['drop_promot']:.2f} | {r['rate_full']} | {r['rate_promot']} | {'yes' if r['holds'] else 'no'} |")
    if maj:
        lines += ["", f"Majority answer of the scored items: '{maj['label']}', {maj['count']} of {maj['n']} = {maj['rate']:.2f}%: "
                  "a model that always gives it scores that. 'Above' is an exact one-sided binomial test of a score's correct "
                  "answers against that rate (p < 0.05)."]
    if g.get("vacuous"):
        lines += ["", "**The goal holds only against full-FT points that score no better than the majority answer**: "
                  "there, equal tuned score does not mean full FT learnt the task, so the comparison says how much ProMoT "
                  "keeps, not that it keeps it at the same learning."]
    return "\n".join(lines)


# ------------------------------------------------------------------ point 6: the paper's tables and claims
PAPER = {  # mT5-XXL, 1-shot Norm. Avg. over the paper's 8 tasks (DESIGN.md; pretrained 17.52)
    "rte": {"base": (None, 17.52), "prompt": (91.34, None), "full": (92.06, 15.43), "promot": (92.78, 20.10),
            "promot-1shot": (93.86, 22.26)},
    "en_fr": {"base": (None, 17.52), "prompt": (39.28, None), "full": (41.80, 9.15), "promot": (41.30, 18.87)},
    "multitask": {"full": ((90.25, 41.34), 20.06), "promot": ((91.34, 40.73), 25.88)},
}
METHODS = ("base", "full", "promot", "promot-1shot", "multitask-full", "multitask-promot")


def paper_results(done: dict, task: str) -> dict:
    evals = {m: done[f"paper-{task}-{m}"] for m in METHODS[:4] if f"paper-{task}-{m}" in done}
    evals.update({f"multitask-{m}": done[f"paper-multitask-{m}"][task] for m in ("full", "promot") if f"paper-multitask-{m}" in done})
    results = results_of(evals, task, [1, 4])
    if len(evals) > 1:
        from retain.evaluation.paired import compare_methods

        results["paired"] = compare_methods(results)
    return results


def verdict(p: dict | None, sign: int = 1) -> str:
    """holds / does not hold / undecided at 95% for the claim ``sign * (B − A) > 0``."""
    if not p:
        return "not yet run"
    lo, hi = sorted((sign * p["ci"][0], sign * p["ci"][1]))
    return "holds" if lo > 0 else "does not hold" if hi < 0 else "undecided"


def normal_diff(a: dict | None, b: dict | None) -> dict | None:
    """B − A for two independent estimates with standard errors (the analyses' points): a normal 95% interval."""
    if not a or not b or None in (a.get("score"), b.get("score"), a.get("se"), b.get("se")):
        return None
    from scipy.stats import norm

    d, se = b["score"] - a["score"], (a["se"] ** 2 + b["se"] ** 2) ** 0.5
    z = norm.ppf(0.975)
    return {"diff": round(d, 2), "ci": [round(d - z * se, 2), round(d + z * se, 2)]}


def claims(res: dict, done: dict, strong: bool = True) -> list[dict]:
    """One line per paper claim, with our paired difference and its verdict (``strong``: the plan has the analyses
    where FT forgets besides those at the recipe)."""
    rte, enfr = res["rte"], res["en_fr"]
    rows = [
        ("Fine-tuning on RTE costs in-context ability (Table 3: 15.43 < 17.52)", pair(rte, "base", "full", "1"), -1),
        ("ProMoT keeps more than FT, RTE (Table 3: 20.10 vs 15.43)", pair(rte, "full", "promot", "1"), 1),
        ("ProMoT + 1-shot keeps more than ProMoT, RTE (Table 3: 22.26 vs 20.10)", pair(rte, "promot", "promot-1shot", "1"), 1),
        ("ProMoT's RTE score at least FT's (Table 3: 92.78 vs 92.06; undecided = consistent with equal)",
         pair(rte, "full", "promot", "1", "tuned"), 1),
        ("ProMoT specializes less to the format than FT, RTE (Fig. 2 vs Sec. 5)", format_pair(rte, "full", "promot", "1", "rte"), -1),
        ("ProMoT keeps more than FT, En-Fr (Table 4: 18.87 vs 9.15)", pair(enfr, "full", "promot", "1"), 1),
        ("ProMoT on En-Fr raises 1-shot En-De over the base (3.97 -> 15.52 BLEU)", pair(enfr, "base", "promot", "1", "en_de"), 1),
        ("Multi-task ProMoT keeps more than multi-task FT (Table 5: 25.88 vs 20.06)",
         pair(rte, "multitask-full", "multitask-promot", "1"), 1),
    ]
    for suffix, where in (("", "at the recipe"), (STRONG, "where FT forgets (lr 1e-4)"))[:2 if strong else 1]:
        rows += analysis_claims(done.get(f"paper-rte-format-curve{suffix}"), done.get(f"paper-rte-gradients{suffix}"), where)
    return [{"claim": c, "ours": p and {"diff": p["diff"], "ci": p["ci"]}, "verdict": verdict(p, sign)} for c, p, sign in rows]


def analysis_claims(curve: dict | None, grads: dict | None, where: str) -> list[tuple]:
    """Fig. 2 and Fig. 3's claims from one pair of analyses: FT's format rate rises from its first to its last point,
    ProMoT's ends below FT's, FT's real-vs-shuffled gradient cosine falls (normal intervals from the points' SEs)."""
    curves = (curve or {}).get("methods") or {}
    rate = lambda q: {"score": q["format_rate"]["1"]["rate"], "se": q["format_rate"]["1"].get("se")}
    full, promot = curves.get("full") or [], curves.get("promot") or []
    g = ((grads or {}).get("methods") or {}).get("full") or []
    cos = lambda q: {"score": q["cosine"]["overall"]["cosine"], "se": q["cosine"]["overall"].get("se")}
    return [
        (f"FT's format rate rises while it trains on RTE, {where} (Fig. 2: 90% True/False on TriviaQA after 300 steps)",
         normal_diff(rate(full[0]), rate(full[-1])) if len(full) > 1 else None, 1),
        (f"ProMoT ends its training specialized less than FT, {where} (Fig. 2)",
         normal_diff(rate(full[-1]), rate(promot[-1])) if full and promot else None, -1),
        (f"The format is learnt first: FT's real-vs-shuffled gradient cosine falls, {where} (Fig. 3: 0.97 -> 0.1)",
         normal_diff(cos(g[0]), cos(g[-1])) if len(g) > 1 else None, -1),
    ]


# ------------------------------------------------------------------ the documents
def _cell(ev: dict | None, what: str, key: str = "1") -> str:
    from retain.evaluation.report import _avg_summary, _pm, _tuned_summary

    if ev is None:
        return "not yet run"
    return _pm(_tuned_summary(ev.get("tuned")) if what == "tuned" else _avg_summary(ev, key))


def paper_table(res: dict, task: str) -> str:
    """The paper's Table 3 (RTE) / 4 (En-Fr) layout: ours beside the paper's (mT5-XXL)."""
    m, paper = res[task]["methods"], PAPER[task]
    lines = [f"| method | {task} ours ± SE | paper | Norm. Avg. 1-shot ours ± SE | paper | Norm. Avg. 4-shot ours | format rate 1-shot (%) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in METHODS[:4]:
        ev = m.get(name)
        pt, pa = paper.get(name, (None, None))
        lines.append(f"| {name} | {_cell(ev, 'tuned') if name != 'base' or ev else 'not yet run'} | {pt if pt is not None else '-'} | "
                     f"{_cell(ev, 'avg', '1')} | {pa if pa is not None else '-'} | {_cell(ev, 'avg', '4')} | "
                     f"{(ev or {}).get('format_rate', {}).get('1', '-') if ev else '-'} |")
    return "\n".join(lines + majority_lines(res[task]))


def majority_lines(results: dict) -> list[str]:
    """For an accuracy task: the majority answer's rate, and which methods score above it (``above_majority``)."""
    m = results["methods"]
    maj = majority(next((m[n]["tuned"] for n in m if m[n].get("tuned")), None)) if results["metric"] == "accuracy" else None
    if not maj:
        return []
    cells = []
    for name, ev in m.items():
        a = above_majority(ev.get("tuned"), maj)
        cells += [f"{name} {'yes' if a['above'] else 'no'} (p {a['p']:.3g})"] if a else []
    return ["", f"Majority answer of the scored items: '{maj['label']}', {maj['rate']:.2f}% (a model that always gives it scores "
            f"that). Above it (exact one-sided binomial test, p < 0.05): {'; '.join(cells)}."]


def multitask_table(res: dict) -> str:
    lines = ["| method | RTE ours ± SE | paper | En-Fr ours ± SE | paper | Norm. Avg. 1-shot ours ± SE | paper | Norm. Avg. 4-shot ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in ("full", "promot"):
        a, b = res["rte"]["methods"].get(f"multitask-{m}"), res["en_fr"]["methods"].get(f"multitask-{m}")
        (pr, pf), pa = PAPER["multitask"][m]
        lines.append(f"| multi-task {m} | {_cell(a, 'tuned')} | {pr} | {_cell(b, 'tuned')} | {pf} | {_cell(a, 'avg', '1')} | {pa} | "
                     f"{_cell(a, 'avg', '4')} |")
    return "\n".join(lines)


def claims_table(rows: list[dict]) -> str:
    lines = ["| paper's claim | ours: difference [95%] | verdict at 95% |", "|---|---:|---|"]
    for r in rows:
        o = r["ours"]
        cell = "-" if not o else f"{o['diff']:+.2f} [{o['ci'][0]:+.2f}, {o['ci'][1]:+.2f}]"
        lines.append(f"| {r['claim']} | {cell} | {r['verdict']} |")
    return "\n".join(lines)


def status_lines(units: Units, units_list: list[tuple], done: dict) -> list[str]:
    lines = ["| unit | status | wall time of its last attempt |", "|---|---|---:|"]
    for u in units_list:
        rec = units.record(u[0])
        st = "done" if u[0] in done else ("started, not finished" if rec else "not yet run")
        spent = f"{rec['seconds'] / 3600:.2f} h" if rec and rec.get("seconds") and u[0] in done else "-"
        lines.append(f"| {u[0]} | {st} | {spent} |")
    return lines


def _copy(src: Path, dst: Path) -> str | None:
    if src.is_file():
        shutil.copyfile(src, dst)
        return dst.name
    return None


def write_search(args, units: Units, docs: Path, command: str) -> dict:
    """docs/results/promot_paper_search.md/.json/_frontier.png, and runs/promot_paper/search-choice.json once every
    search unit finished."""
    from retain.analysis.frontier import frontier_table, write_frontier
    from retain.artifacts import write_json, write_text

    plan = search_units(args)
    done = finished(units, plan)
    shots = [int(k) for k in args.search_shots.split(",")]
    results = search_results(done, shots)
    key = str(shots[-1])
    values = list(FULL_GRID) + [k for k in PROMOT_GRID if k not in FULL_GRID]
    tmp = units.root / "search-aggregate"
    tmp.mkdir(parents=True, exist_ok=True)
    write_frontier(results, tmp, ("recipe",), values) if results["methods"] else None
    front = _copy(tmp / "frontier.png", docs / "promot_paper_search_frontier.png")
    complete = len(done) == len(plan)
    g = goal(results, key) if "base" in results["methods"] else None
    choice = choose(results, key) if complete else None
    if choice:
        write_json(units.root / "search-choice.json", choice)
    md = ["# ProMoT's recipe, searched (issue 12, point 5)", "", "Command (repository root):", "", "```bash", command, "```", "",
          _search_setup(args), "", "## Units", "", *status_lines(units, plan, done), "", cost_text({"search": plan}), "",
          f"## Frontier ({key}-shot; RTE validation, suite seed {SEARCH_SEED})", "",
          frontier_table(results["frontier"], key) if results.get("frontier") else "Nothing finished yet.", "",
          f"![frontier]({front})" if front else "", "", "## The goal", "",
          goal_text(g) if g else "Not yet decidable: the base unit has not run.", "",
          "## Recipe taken to the paper run", "",
          (f"Rule: {choice['rule']}\n\nfull FT: `{choice['full']['name']}` {choice['full']['options']}; "
           f"ProMoT: `{choice['promot']['name']}` {choice['promot']['options']}\n\n{defaults_text(choice)}") if choice else
          "Not chosen yet: every search unit must finish first (the paper run can use `--recipe default` meanwhile)."]
    write_text(docs / "promot_paper_search.md", "\n".join(md) + "\n")
    write_json(docs / "promot_paper_search.json", {"command": command, "goal": g, "choice": choice,
                                                   "frontier": results.get("frontier"), "done": sorted(done),
                                                   "not_yet_run": [u[0] for u in plan if u[0] not in done]})
    return {"goal": g, "choice": choice}


def _search_setup(args) -> str:
    return ("Tuned task: RTE (../shared/data/rte; template `{input}\\nAnswer:`, accuracy), the paper's own: its True/False "
            "answers make the format-specialization rate measurable on every suite task, and the paper reports on its "
            "validation split, which is the data the search chooses on (tuned score: its first "
            f"{args.tuned_examples} items; RTE has 277). Suite: bench/paper_suite.yaml, {args.search_examples} items per task "
            f"(the paper run: 100), {args.search_shots}-shot, suite seed {SEARCH_SEED} "
            f"(the paper run draws with seed {PAPER_SEED}: other demonstrations and, where a task has more rows than it "
            f"scores, partly other items). Budget: {len(FULL_GRID)} trained configurations for full FT "
            f"(lr x steps: {', '.join(FULL_GRID)}) and {len(PROMOT_GRID)} for ProMoT (centre {CENTRE}, one change at a time: "
            f"{', '.join(PROMOT_GRID)}). Batch 8, AdamW, constant lr, last weights (no checkpoint selection: the strength is what "
            f"is searched), greedy decoding unless --num-beams. Model {args.model}.")


def write_paper(args, units: Units, docs: Path, command: str) -> dict:
    from retain.artifacts import write_json, write_text
    from retain.evaluation.report import comparison_table, paired_table

    plan = paper_units(args)
    done = finished(units, plan)
    res = {t: paper_results(done, t) for t in TASKS}
    rows = claims(res, done, strong=any(u[0].endswith(STRONG) for u in plan))
    pngs = {n + x: _copy(units.root / f"paper-rte-{n}{x}" / "out" / f"{n.replace('-', '_')}.png",
                         docs / f"promot_paper_{n.replace('-', '_')}{x.replace('-', '_')}.png")
            for x in ("", STRONG) for n in ("format-curve", "gradients") if f"paper-rte-{n}{x}" in {u[0] for u in plan}}
    _, _, source = recipe(args)
    md = ["# The ProMoT paper at small scale (issue 12, point 6)", "", "Command (repository root):", "", "```bash", command, "```", "",
          f"Model {args.model}; recipe: {source}; suite bench/paper_suite.yaml (10 tasks of ../shared/data/icl + En-De, "
          f"{args.examples or 100} items each), 1- and 4-shot, seed {PAPER_SEED}; tuned task: its first {args.tuned_examples} "
          "validation items (RTE has 277, En-Fr 500), in its own format, ProMoT with its prompt. Paper columns: mT5-XXL, 1-shot, its 8 tasks (BLEU for "
          "translation; ours chrF): the layout is the paper's, the numbers are not comparable in level, only in direction.", "",
          "## Units", "", *status_lines(units, plan, done), "", cost_text({"paper": plan}), "",
          "## The paper's claims here", "",
          "Verdict: holds = the 95% interval (paired bootstrap over items; the two analyses: normal interval from their "
          "standard errors) lies on the claim's side of 0; does not hold = on the other side; undecided = it includes 0.", "",
          claims_table(rows), "", "## Table 3: fine-tuned on RTE", "", paper_table(res, "rte"), "",
          "## Table 4: fine-tuned on En-Fr", "", paper_table(res, "en_fr"), "", "## Table 5: multi-task (RTE + En-Fr)", "",
          multitask_table(res), ""]
    for t in TASKS:
        if len(res[t]["methods"]) > 1:
            for k in (1, 4):
                md += [f"### {t}, {k}-shot, every task", "", comparison_table(res[t], k), "", paired_table(res[t], k), ""]
    twice = ("Twice: at the recipe of the tables above, and where full FT forgets (units -strong, the search's centre: full FT "
             "lr 1e-4 x 60 steps, ProMoT with a 100-token text prompt, 60 stage-1 steps at lr 3e-2, then stage 2 at lr 1e-4), since "
             "Fig. 2 and 3 describe a fine-tuning that specializes. " if any(n.endswith(STRONG) for n in pngs) else "")
    md += ["## Format curve and gradients (RTE)", "",
           f"{twice}Format curve: 1-shot, 20 items per suite task and 50 RTE items per point, ProMoT's stage 1 at negative "
           "steps, its stage 2 over as many steps as full FT; gradients: the first half of model tuning, 4 probe batches per point.", ""]
    for n, p in pngs.items():
        md += [f"### {n}", "", f"![{n}]({p})" if p else "not yet run", ""]
    write_text(docs / "promot_paper.md", "\n".join(md) + "\n")
    write_json(docs / "promot_paper.json", {"command": command, "claims": rows, "results": {t: _light(r) for t, r in res.items()},
                                            "done": sorted(done), "not_yet_run": [u[0] for u in plan if u[0] not in done]})
    return {"claims": rows}


def _light(results: dict) -> dict:
    """Scores without the per-item units (those stay in the units' folders)."""
    strip = lambda ev: {**ev, "tasks": {n: {k: v for k, v in r.items() if k != "units"} for n, r in ev["tasks"].items()},
                        "tuned": ev.get("tuned") and {k: v for k, v in ev["tuned"].items() if k != "units"}}
    return {**results, "methods": {m: strip(ev) for m, ev in results["methods"].items()}}


# ------------------------------------------------------------------ cost: measured, then per unit
def probe(args) -> dict:
    """Seconds per optimizer step (RTE and En-Fr batches of 8 drawn with seed 0, packed as the engine packs them) and
    per evaluated item, on this machine; written to bench/results/promot_paper_probe.json."""
    import time

    from bench._common import step_timer, task_rows, write_result

    from retain.config import TrainConfig
    from retain.data import TaskFormat, load_jsonl
    from retain.evaluation.harness import TunedSpec, evaluate_all
    from retain.evaluation.suite import load_suite
    from retain.methods import wrap
    from retain.models import load_model

    loaded = load_model(args.model)
    tok, out = loaded.tokenizer, {"model": args.model, "threads": os.environ.get("OMP_NUM_THREADS"),
                                  "load_average_at_start": os.getloadavg()[0]}
    rows = {t: task_rows(tok, t, 8, TASKS[t]["template"], TASKS[t]["max_length"], seed=0) for t in TASKS}
    from retain.engine.prompt_packing import prompt_packing_layout

    plain = step_timer(loaded.model, tok, "model", packing=True)
    out["full_step_s"] = {t: round(plain(rows[t], n=2), 2) for t in TASKS}
    print(f"[probe] full-FT step {out['full_step_s']}", flush=True)
    model = wrap(loaded.model, tok, "promot", TrainConfig(model=args.model, prompt_length=CENTRE["prompt_length"]), False)
    layout = out["prompt_layout"] = prompt_packing_layout(model) or False  # the engine's choice (False: padded)
    s1 = step_timer(model, tok, "prompt", lr=3e-2, packing=layout)(rows["rte"], n=2)
    s2 = step_timer(model, tok, "model", packing=layout)(rows["rte"], n=2)
    ratio = out["full_step_s"]["en_fr"] / out["full_step_s"]["rte"]  # En-Fr's stages scaled by its full-FT step
    out["stage1_step_s"] = {"rte": round(s1, 2), "en_fr": round(s1 * ratio, 2)}
    out["stage2_step_s"] = {"rte": round(s2, 2), "en_fr": round(s2 * ratio, 2)}
    print(f"[probe] stage 1 {out['stage1_step_s']}, stage 2 {out['stage2_step_s']} (En-Fr scaled)", flush=True)
    model = model.get_base_model()
    tasks, val = load_suite(SUITE, examples=4), load_jsonl(SHARED / "rte" / "validation.jsonl")[:8]
    t0 = time.perf_counter()
    evaluate_all(model, tok, tasks, [1, 4], seed=PAPER_SEED, batch_size=32)
    out["suite_item_s"] = round((time.perf_counter() - t0) / (len(tasks) * 4 * 2), 3)
    t0 = time.perf_counter()
    evaluate_all(model, tok, [], [1], tuned=TunedSpec("rte", val, TaskFormat(TASKS["rte"]["template"]), "accuracy", 6),
                 batch_size=32)
    out["tuned_item_s"] = round((time.perf_counter() - t0) / len(val), 3)
    out["load_average_at_end"] = os.getloadavg()[0]  # the machine is shared: a load above 2 inflates every figure
    write_result("promot_paper_probe", out)
    print(json.dumps(out, indent=2))
    return out


def unit_hours(kind: str, task: str | None, method: str | None, train: dict, ev: dict, p: dict) -> float:
    """CPU hours of one unit from the probe: its optimizer steps times their measured cost, plus its evaluations."""
    t = task or "rte"
    stage1 = train.get("stage1_steps", 0) * p["stage1_step_s"][t] * (len(TASKS) if kind == "multitask" else 1)
    steps = {"base": 0, "full": train.get("max_steps", 0) * p["full_step_s"][t]}
    promot = stage1 + train.get("stage2_steps", 0) * p["stage2_step_s"][t]
    suite_s = 11 * (ev.get("examples") or 100) * len(str(ev.get("shots", "1")).split(",")) * p["suite_item_s"]
    tuned_s = lambda task: min(ev["tuned_examples"], _validation_rows(task)) * p["tuned_item_s"]  # RTE has 277
    if kind == "compare":
        train_s = steps.get(method, promot)
        evals = suite_s + tuned_s(t)
    elif kind == "multitask":
        train_s = steps["full"] if method == "full" else promot
        evals = sum(suite_s + tuned_s(x) for x in TASKS)
    elif kind == "format-curve":
        train_s = steps["full"] + promot
        points = 2 * (train["max_steps"] // ev["every"] + 2) + train["stage1_steps"] // ev["every"]
        evals = points * (suite_s + tuned_s(t))
    else:
        train_s = steps["full"] + promot
        evals = 2 * (train["max_steps"] // ev["every"] + 2) * 2 * ev["probe_batches"] * p["full_step_s"][t] / 2
    return (train_s + evals) / 3600


def _validation_rows(task: str) -> int:
    path = SHARED / task / "validation.jsonl"
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else 500


def cost_text(plans: dict | None = None) -> str:
    """The estimate per unit and in all, from the probe's measurements (or a line saying there are none)."""
    if not COST_FILE.is_file():
        return "Cost: no probe measurement yet (`python bench/promot_paper.py probe`)."
    p = json.loads(COST_FILE.read_text())
    head = (f"Cost estimate (CPU hours, one thread, measured by `probe` on {p.get('time', '?')}: full-FT step RTE "
            f"{p['full_step_s']['rte']} s / En-Fr {p['full_step_s']['en_fr']} s; stage-1 step (100-token prompt) "
            f"{p['stage1_step_s']['rte']} s / {p['stage1_step_s']['en_fr']} s; stage-2 step {p['stage2_step_s']['rte']} s / "
            f"{p['stage2_step_s']['en_fr']} s; {p['suite_item_s']} s per suite item, {p['tuned_item_s']} s per RTE item; "
            f"packed as the engine packs ({p.get('prompt_layout')} prompt layout); load average {p.get('load_average_at_start', 0):.1f} at "
            f"the start on the 2 cores, so on a quiet machine expect less):")
    if not plans:
        return head
    lines = [head, "", "| step | unit | CPU hours |", "|---|---|---:|"]
    for step, plan in plans.items():
        total = 0.0
        for name, kind, method, task, train, ev in plan:
            h = unit_hours(kind, task, method, train, ev, p)
            total += h
            lines.append(f"| {step} | {name} | {h:.2f} |")
        lines.append(f"| {step} | **all** | **{total:.1f}** |")
    lines += ["", "Wall time with `--jobs 2` (two units at once, one thread each): about half the CPU hours, the units being "
              "independent (the paper's wait for the search's choice). Measured 2026-11-30 on this machine under load ~2.5: "
              "a full-FT step on an En-Fr batch of 8 took 3.6 s in each of two one-thread processes at once, 27 s in one "
              "process on two threads."]
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench._common import default_jobs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("search", "paper", "all", "probe"),
                    help="search: point 5; paper: point 6; all: both, the paper's units after the search's; probe: the cost")
    ap.add_argument("--model", default="smollm2-135m", help="model spec (tiny-random-llama for a smoke test)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "promot_paper"), help="units' folder (runs/promot_paper/UNIT/)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "results"), help="where promot_paper*.md/.json/.png go")
    ap.add_argument("--aggregate-only", action="store_true", help="rebuild the docs from the finished units; run nothing")
    ap.add_argument("--overwrite", action="store_true", help="redo a unit recorded with other options")
    ap.add_argument("--only", default=None, help="run only the units matching these comma-separated patterns "
                                                 "(e.g. 'search-full-*'; the docs still cover every unit)")
    ap.add_argument("--recipe", choices=("search", "default"), default="search",
                    help="paper: the search's chosen recipe, or its centre without waiting for it")
    ap.add_argument("--jobs", type=int, default=default_jobs(),
                    help="units run at once, each its own process on cpus/JOBS threads, output in WORK/logs/UNIT.log "
                         "(default: one per CPU, %(default)s here; capped at the units to run)")
    ap.add_argument("--keep-weights", action="store_true",
                    help="keep a finished unit's model weights (default: deleted, ~540 MB each; its evaluations stay)")
    ap.add_argument("--unit", default=None, help=argparse.SUPPRESS)  # one unit in this process (what --jobs starts)
    ap.add_argument("--steps", type=int, default=None, help="every step count of every unit (a smoke test: 2)")
    ap.add_argument("--examples", type=int, default=None, help="suite items per task (default: the suite's 100; caps the search's too)")
    ap.add_argument("--search-examples", type=int, default=30, help="suite items per task in the search")
    ap.add_argument("--tuned-examples", type=int, default=500, help="tuned-task validation items (the first N; RTE has 277)")
    ap.add_argument("--search-shots", default="4", help="shot counts of the search (the paper run: 1,4)")
    ap.add_argument("--num-beams", type=int, default=1, help="beams (paper: 4; about 4x the evaluation time here)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    return args


def one_unit(args, units: Units) -> int:
    """``--unit NAME``: run it here; its weights deleted once it is done (nothing later loads them) unless
    ``--keep-weights``. Exit 130 when interrupted (a training keeps its checkpoint)."""
    from bench._common import drop_weights

    from retain.engine.interrupt import Interrupted
    from retain.errors import RetainError

    unit = next((u for u in (search_units(args) if args.step == "search" else paper_units(args)) if u[0] == args.unit), None)
    if unit is None:
        raise RetainError(f"--unit {args.unit}: no such unit in step '{args.step}'")
    try:
        run_unit(unit, units, units.log)
    except (KeyboardInterrupt, Interrupted):
        print(f"[units] {args.unit}: interrupted; rerun the same command to continue it", flush=True)
        return 130
    if not args.keep_weights:
        freed = drop_weights(units.root / args.unit)
        if freed:
            print(f"[units] {args.unit}: model weights deleted ({freed / 1e6:.0f} MB; --keep-weights keeps them)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from bench._common import run_jobs

    from retain.cli import _quiet_libraries
    from retain.errors import RetainError

    _quiet_libraries()
    os.chdir(ROOT)  # the suite and the recorded options are relative to the repository root
    if args.step == "probe":
        probe(args)
        return
    # the command that runs the units (the docs say how they were made, also when rebuilt with --aggregate-only)
    command = "HF_HUB_OFFLINE=1 python bench/promot_paper.py " + shlex.join(a for a in (argv or sys.argv[1:]) if a != "--aggregate-only")
    units, docs = Units(args.work, overwrite=args.overwrite, log=lambda m: print(m, flush=True)), Path(args.docs)
    steps = ["search", "paper"] if args.step == "all" else [args.step]
    rc = 0
    try:
        if args.unit:
            sys.exit(one_unit(args, units))
        docs.mkdir(parents=True, exist_ok=True)
        writers = {"search": write_search, "paper": write_paper}
        if args.step == "paper" and args.recipe == "search" and not args.aggregate_only:
            recipe(args)  # the choice must exist: refused here rather than in every unit's process
        if args.step == "all" and args.recipe == "search" and not (units.root / "search-choice.json").is_file():
            write_search(args, units, docs, command)  # the choice, if every search unit finished earlier
        shown = argparse.Namespace(**{**vars(args), "aggregate_only": True})  # the paper's docs: planned if not chosen
        if not args.aggregate_only:
            jobs = plan_jobs(args, steps, units)
            step_of = {j.name: ("search" if j.name.startswith("search-") else "paper") for j in jobs}
            print(f"[jobs] {len(jobs)} unit(s) to run, {min(args.jobs, len(jobs))} at once", flush=True)
            rc = run_jobs(jobs, args.jobs, units.root / "logs", log=units.log,  # docs (and the search's choice) kept current
                          on_finish=lambda name, status: writers[step_of[name]](shown, units, docs, command))
        out = {step: writers[step](shown, units, docs, command) for step in steps}
    except RetainError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(out, indent=2, default=str)[:4000])
    print(f"wrote {docs}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
