"""Continual instruction tuning on the five CIT tasks (../shared/data/cit): the benchmark that decides.

Runs ``retain continual`` for every method of the continual registry (``retain.continual.methods``; read, not
listed here) on the five tasks in the order of the data README (simp, emdg, inqqg, exp, hgen), with the same budget
for all: steps per task (multitask: steps x 5 on the mixture), batch, max length, validation items, the switch's
general class (``--general-data builtin``), the general-ability suite, best-weights selection and seed as the CLI's
defaults give them. Then writes, from whatever methods have finished (the others listed as not yet run):

    docs/results/cit.md                 command, budget, Last/Avg/BWT/FWT/forgetting, general-ability delta,
                                        routing, paired differences, and "What holds at 95%" (bench/cit_report.py)
    docs/results/cit.json               every finished method's results.json (per-item units left out)
    docs/results/cit_average.png        average score over the tasks seen, per stage, all methods
    docs/results/cit_general.png        general-ability delta from the base per stage, with its 95% interval
    docs/results/cit/<method>/          results.md, results.json (with units), R.png, average.png

Order: switchcit, sequential and multitask first (the paper's main claims rest on them: switchcit's BWT ~0 and
near-multitask average while sequential forgets), then the rest of the registry. ``--jobs N`` (default: one per
CPU, 2 here) runs N methods at once, each its own process on cpus/N threads (``bench/_common.run_jobs``), its
output in runs/cit/logs/<method>.log, one line per start and finish here; the documents are rewritten as each
method ends. Ctrl-C or SIGTERM stops them with their checkpoints (rerun the same command to continue).

Resumable, for a run spread over several sessions: each method runs into runs/cit/<method>/ with ``--save-every``;
rerunning the same command skips a finished method whose recorded options (``results.json`` ``config``) equal this
invocation's, reruns one with other options (naming them), and continues an interrupted one with ``--resume``
(its hidden ``runs/cit/.<method>.partial`` holds the same options; with other ones it starts afresh, saying so),
which reloads the finished tasks and reads back what they measured (base model, R rows, routing, general suite).
A method finished in an earlier checkout counts from its committed results: a fresh checkout has no runs/cit, so
the files of docs/results/cit/<method>/ (results.json with its per-item units, results.md, plots) are copied back
to runs/cit/<method>/ first (``restore``); only a registry on disk lends adapters.
Work done once: ``arrow`` waits for ``switchcit`` and routes its registry's adapters (``--adapters-from``: the
adapters it would train are byte-identical, tested; nothing trained), and every method started after a method has
finished takes that run's base-model scores (``--base-scores``: the first finished in run order; the same figures,
tested). Both flags are chosen when a method starts (``reuse_flags``) and are not run settings: they change neither
what is skipped nor what is resumed, and ``retain continual`` verifies both (one line if anything differs, e.g. task
data changed since the lender ran; ``--no-reuse`` then does all the work). The commands in the documents omit them.

Budget (defaults) and why: 200 steps per task at batch 4 (800 examples of each task's 2000, 16x cit_small's 48),
max length 256 (the CLI's; at 128, 54% of inqqg's training examples would lose their instruction, which opens the
input, for 10% less compute), the first 100 validation items per task measure R (the next 50 choose each task's
best weights every 50 steps, the CLI's ``--eval-every``/``--select-samples``), each method's default learning rate
(registry: 2e-4 for LoRA adapters, 2e-5 full fine-tuning and OSF), seed 0, a checkpoint every 50 steps. General
ability on ``bench/icl_suite.yaml`` (10 tasks x 30 items, 4-shot), not the built-in suite: the switch's general
class is learnt from the built-in suite's own items (``--general-data builtin``), so the built-in suite would
measure it on prompts it was trained on.

Cost, from a timing probe (2026-11-30, SmolLM2-135M, OMP_NUM_THREADS=1, this 2-core machine under load 2-3): a
batch of 8 CIT examples (751 tokens) takes 13.6 s per step full fine-tuning and 11.5 s with LoRA; the mean
example is 79 tokens at max length 256 (simp 56, emdg 76, inqqg 147, exp 56, hgen 61), so a batch of 4 takes
about 5.7 s (full) and 4.8 s (LoRA); cit_small measured 4-11 s per step at batch 4. Generation: 0.65 s per CIT
validation item (cit_small: about 1550 s for 2400 items); the ICL suite about 40 s per scoring. Per method:

    training   1000 steps x 5.7 s = 1.6 h (full: sequential, replay, multitask, osf) or x 4.8 s = 1.3 h (LoRA)
    R and FWT  (5 base + 2+3+4+5+5 after the stages) x 100 items x 0.65 s = 26 min (multitask: 1000 items, 11 min)
    selection  4 scorings x 50 items x 5 tasks x 0.65 s = 11 min (multitask: 20 x 250 items = 54 min)
    general    6 scorings x ~40 s = 4 min (routed through the switch or Arrow: 2-3x)

    base model 5 x 100 items x 0.65 s + one plain ICL scoring = 6 min of the above (R's 5 base rows, a general one)

    scoring everything itself: switchcit ~1.9 h, sequential-lora ~1.9 h, sequential ~2.2 h, replay ~2.2 h,
    osf ~2.3 h (+ an SVD per task, not probed), multitask ~2.7 h, arrow ~2.8 h (training 1.3 h + selection
    11 min + R through Arrow 19 x 100 items x 0.65 s x 3 = 62 min (Arrow mixes 3 adapters in every LoRA layer for
    every token: generation about 3x slower, bench/routing.py) + base 6 min + general 5 x 40 s x 3 = 10 min)

    reusing (the base: all but the first two, which start together; arrow: switchcit's adapters): 0.1 h less each,
    and arrow ~1.2 h (its 62 + 10 min of routed evaluation only): switchcit 1.9, sequential 2.2, multitask 2.6,
    sequential-lora 1.8, replay 2.1, osf 2.2, arrow 1.2: about 14 CPU h in all (16 without reuse), training and
    best-weights selection about three quarters of it.

With ``--jobs 2`` (the default here: two methods at once, one thread each; two one-thread processes at once kept
the one-thread step rate, measured on promot_paper's En-Fr batches: bench/_common.default_jobs), the two lanes go
(a freed lane takes the next method in run order): switchcit 0-1.9 h, multitask 1.9-4.5 h, osf 4.5-6.7 h;
sequential 0-2.2 h, sequential-lora 2.2-4.0 h, replay 4.0-6.1 h, arrow 6.1-7.3 h. So ~7.3 h of wall time (8.6 h
without reuse and with arrow in registry order), 5 sessions of ~1.5 h, the three methods that decide the paper's
claims finished after ~4.5 h (3 sessions). 200 steps per task stays: 100 would save ~3 h of wall time (training is
most of it), but 200 is what lets each task learn (issue 13: hundreds of steps per task; cit_small's 12 steps barely
moved the model), and the deciding three come first either way.

Evaluation does not dominate; nothing is measured less, and nothing is measured twice.

    python bench/cit.py                                   # everything, 2 at once, resumable (rerun the same command)
    python bench/cit.py --jobs 1                          # one method at a time, on every thread
    python bench/cit.py --methods switchcit multitask     # some methods
    python bench/cit.py --aggregate-only                  # rebuild docs/results from runs/cit
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # retain from this checkout, installed or not
sys.path.insert(0, str(ROOT / "bench"))  # cit_report, _common
from _common import default_jobs  # noqa: E402
from cit_report import RESULT_FILES  # noqa: E402  (what the documents keep of a finished method)

DATA = Path(os.environ.get("RETAIN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "cit"
TASKS = ("simp", "emdg", "inqqg", "exp", "hgen")  # the order listed in the data README
BUDGET = {"name": "cit", "max_steps": 200, "batch_size": 4, "max_length": 256, "eval_samples": 100,
          "general_suite": "bench/icl_suite.yaml", "general_examples": 30, "save_every": 50, "seed": 0}


FIRST = ("switchcit", "sequential", "multitask")  # run first: the paper's main claims rest on these three


def registry_methods() -> list[str]:
    from retain.continual.methods import names

    return list(names())


def _method(name: str):
    from retain.continual.methods import get

    return get(name)


def run_order(methods: list[str]) -> list[str]:
    """``FIRST`` (those of ``methods``), then the others in their order, those that take their adapters from a
    registry (arrow: no training, the cheapest) last, where they fill the lane that frees first."""
    rest = [m for m in methods if m not in FIRST]
    return ([m for m in FIRST if m in methods] + [m for m in rest if not _method(m).adapters_from]
            + [m for m in rest if _method(m).adapters_from])


def parse(argv: list[str] | None, budget: dict) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", nargs="+", default=budget.get("methods") or registry_methods(), choices=registry_methods(), metavar="METHOD",
                    help="continual methods (default: every method of the registry)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="a subset of the tasks (kept in their order)")
    ap.add_argument("--max-steps", type=int, default=budget["max_steps"], help="steps per task (multitask: x tasks on the mixture)")
    ap.add_argument("--batch-size", type=int, default=budget["batch_size"])
    ap.add_argument("--max-length", type=int, default=budget["max_length"])
    ap.add_argument("--eval-samples", type=int, default=budget["eval_samples"], help="validation items per task that measure R")
    ap.add_argument("--general-suite", default=budget["general_suite"], help="suite of the general-ability delta (retain eval --suite)")
    ap.add_argument("--general-examples", type=int, default=budget["general_examples"], help="items per general-suite task")
    ap.add_argument("--save-every", type=int, default=budget["save_every"], help="checkpoint every N steps (for --resume)")
    ap.add_argument("--seed", type=int, default=budget["seed"])
    ap.add_argument("--lr", nargs="+", default=[f"{m}={v}" for m, v in budget.get("lr", {}).items()], metavar="METHOD=LR",
                    help="a method's learning rate (default: the method's own, from the registry)")
    ap.add_argument("--option", nargs="+", default=[], metavar="NAME=VALUE",
                    help="any other 'retain continual' option, for every method (e.g. select_samples=4)")
    ap.add_argument("--margin", type=float, default=2.0, help="points within which 'about 0' / 'near' holds (What holds at 95%%)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / budget["name"]))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--name", default=budget["name"], help="file names under --docs: NAME.md, NAME.json, NAME_*.png, NAME/")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--no-reuse", action="store_true",
                    help="every method trains its own adapters and scores the base itself (no --adapters-from, --base-scores)")
    ap.add_argument("--jobs", type=int, default=default_jobs(),
                    help="methods run at once, each its own process on cpus/JOBS threads, output in RUNS/logs/METHOD.log "
                         "(default: one per CPU, %(default)s here; capped at the methods to run)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    args.methods = run_order(args.methods)
    args.tasks = [t for t in TASKS if t in args.tasks]
    args.documented = budget.get("methods") or registry_methods()  # the methods the documents cover
    return args


def _rel(p) -> str:
    """A path as the commands record it: relative to the checkout when it is beside it (stable across checkouts)."""
    p = Path(p).resolve()
    return os.path.relpath(p, ROOT) if p.is_relative_to(ROOT.parent) else str(p)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            sys.exit(f"cit: {what} '{item}' is not NAME=VALUE")
        out[key] = value
    return out


def continual_argv(method: str, args) -> list[str]:
    """The ``retain continual`` flags of one method (without --resume/--overwrite)."""
    lrs = _pairs(args.lr, "--lr")
    argv = ["--model", args.model, "--method", method, "--tasks", *[_rel(DATA / t) for t in args.tasks],
            "--task-config", "bench/cit_tasks.yaml", "--output", _rel(Path(args.runs) / method),
            "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
            "--eval-samples", str(args.eval_samples), "--general-suite", args.general_suite,
            "--general-examples", str(args.general_examples), "--save-every", str(args.save_every), "--seed", str(args.seed)]
    if method in lrs:
        argv += ["--lr", lrs[method]]
    for key, value in _pairs(args.option, "--option").items():
        argv += ["--" + key.replace("_", "-"), value]
    return argv


def settings(argv: list[str]) -> dict:
    """The options ``retain continual argv`` would record, as ``--resume`` compares them (one rule:
    ``workflows.continual.run_settings``)."""
    from retain.cli import build_parser
    from retain.config import build, to_dict
    from retain.continual.config import ContinualConfig
    from retain.workflows.continual import run_settings

    return run_settings(to_dict(build(ContinualConfig, build_parser().parse_args(["continual", *argv]))))


def _differ(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def plan(method: str, args) -> tuple[list[str] | None, str]:
    """(the flags to add, or None to skip; what and why) for one method."""
    from retain.artifacts import staging_dir

    out = Path(args.runs).resolve() / method
    want = settings(continual_argv(method, args))
    extra: list[str] = []
    note = "run"
    if (out / "results.json").is_file():
        diff = stale(args).get(method)
        if not diff:
            return None, "finished with the same options: skipped"
        extra.append("--overwrite")
        note = f"finished with other options ({', '.join(diff)}): rerun"
    recorded = staging_dir(out) / "checkpoints" / "settings.json"
    if recorded.is_file():
        diff = _differ(json.loads(recorded.read_text()), want)
        if diff:
            note += f"; an interrupted run with other options ({', '.join(diff)}) is discarded"
        else:
            extra.append("--resume")
            note += "; continues the interrupted run (--resume)"
    return extra, note


def jobs_of(args) -> list:
    """The methods to run (skipped, rerun or resumed as ``plan`` says), in ``run_order``, as processes. A method
    that can take its adapters from a registry waits for the methods that write one (arrow for switchcit); each
    one's reuse flags are chosen when it starts (``reuse_flags``)."""
    from _common import Job

    jobs = []
    writers = [m for m in registry_methods() if _method(m).registry]
    for method in args.methods:
        extra, note = plan(method, args)
        print(f"[cit] {method}: {note}", flush=True)
        if extra is not None:
            argv = [sys.executable, "-m", "retain", "continual", *continual_argv(method, args), *extra]
            jobs.append(Job(method, lambda argv=argv, method=method: argv + reuse_flags(method, args),
                            needs=writers if _method(method).adapters_from else ()))
    return jobs


def current(args) -> list[str]:
    """The methods finished with this invocation's options, in run order (their results can be lent)."""
    done = [m for m in run_order(registry_methods()) if (Path(args.runs) / m / "results.json").is_file()]
    changed = stale(args)
    return [m for m in done if m not in changed]


def _same_adapters(registry: str, method: str, args) -> bool:
    """Whether ``method`` would train the adapters ``registry`` trained (the options ``--adapters-from`` compares;
    e.g. not with ``--lr`` given for one of them only)."""
    from retain.continual.reuse import adapter_options

    return adapter_options(settings(continual_argv(registry, args)), 1) == adapter_options(settings(continual_argv(method, args)), 1)


def reuse_flags(method: str, args) -> list[str]:
    """What ``method`` takes from finished runs, decided when it starts: the adapters of a current registry
    (``--adapters-from``, for a method that can), and the base model's scores of the first current run that records
    them (``--base-scores``). Neither is a run setting (``run_settings``), so neither changes what is skipped or
    resumed; ``retain continual`` verifies both and refuses a mismatch in one line."""
    runs, flags = Path(args.runs), []
    if args.no_reuse:
        return flags
    done = [m for m in current(args) if m != method]
    from retain.continual.registry import REGISTRY_FILE

    registry = next((m for m in done if _method(m).registry and (runs / m / REGISTRY_FILE).is_file()), None)
    if _method(method).adapters_from and registry and _same_adapters(registry, method, args):
        flags += ["--adapters-from", _rel(runs / registry)]
    lender = next((m for m in done if "base_evaluation" in json.loads((runs / m / "results.json").read_text())), None)
    if lender:
        flags += ["--base-scores", _rel(runs / lender / "results.json")]
    return flags


def restore(args) -> list[str]:
    """Methods whose finished results are committed (``--docs``/NAME/<method>/, written by ``aggregate``) but absent
    from ``--runs`` (a fresh checkout): their files are copied back, so that they count as finished (skipped when
    their recorded options equal this invocation's, rerun otherwise, as ``plan`` says) and lend their base-model
    scores. Only the results come back, no registry: ``reuse_flags`` lends adapters only from a registry on disk."""
    import shutil

    done = []
    for method in args.documented:
        src, dest = Path(args.docs) / args.name / method, Path(args.runs) / method
        if (dest / "results.json").exists() or not all((src / f).is_file() for f in RESULT_FILES):
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for f in RESULT_FILES:
            shutil.copyfile(src / f, dest / f)
        done.append(method)
        print(f"[cit] {method}: finished results restored from {_rel(src)}", flush=True)
    return done


def run_methods(args) -> int:
    """``--jobs`` methods at once (``_common.run_jobs``); the documents rewritten after each one finishes or stops."""
    from _common import run_jobs

    jobs = jobs_of(args)
    print(f"[cit] {len(jobs)} method(s) to run, {min(args.jobs, len(jobs))} at once", flush=True)
    rc = run_jobs(jobs, args.jobs, Path(args.runs) / "logs", log=lambda m: print(m, flush=True),
                  on_finish=lambda name, status: aggregate(args))
    if not jobs:
        aggregate(args)
    if rc:
        print(f"[cit] stopped (exit {rc}); rerun the same command to continue", flush=True)
    return rc


def command_line(args) -> str:
    argv = [a for a in sys.argv[1:] if a != "--aggregate-only"]  # threads per method: set by --jobs (_common.run_jobs)
    return shlex.join(["python", "bench/" + Path(sys.argv[0]).name, *argv])


def stale(args) -> dict[str, list[str]]:
    """Finished methods whose recorded options differ from this invocation's: {method: the options that differ}."""
    from retain.workflows.continual import run_settings

    out = {}
    for method in args.documented + [m for m in args.methods if m not in args.documented]:
        f = Path(args.runs) / method / "results.json"
        if f.is_file():
            diff = _differ(run_settings(json.loads(f.read_text())["config"]), settings(continual_argv(method, args)))
            if diff:
                out[method] = diff
    return out


def aggregate(args) -> None:
    import cit_report

    cit_report.write(Path(args.runs), Path(args.docs), args.name, command=command_line(args), methods=args.documented,
                     margin=args.margin, argv=lambda m: "retain continual " + shlex.join(continual_argv(m, args)), stale=stale(args))


def main(argv: list[str] | None = None, budget: dict | None = None) -> None:
    args = parse(argv, {**BUDGET, **(budget or {})})
    missing = [t for t in args.tasks if not (DATA / t / "train.jsonl").is_file()]
    if missing and not args.aggregate_only:
        sys.exit(f"cit: task data not found under {DATA} ({', '.join(missing)}); set RETAIN_SHARED_DATA")
    restore(args)
    if args.aggregate_only:
        aggregate(args)
        return
    sys.exit(run_methods(args))


if __name__ == "__main__":
    main()
