"""Train methods side by side with one budget, evaluate all, write table and plots.

Output directory ``DIR``::

    compare.json          the settings (model, data sha256, suite, shots, training options)
    runs/METHOD/          each trained method, a normal run directory (retain train)
    evals/METHOD.json     each method's evaluation
    results.json          everything, per method
    results.md            the paper's table layout, one table per shot count (--shots, default 1,4)
    tradeoff.png          tuned-task score vs Norm. Avg., one point per method (the last shot count;
                          tradeoff-Kshot.png for the others)
    tasks.png             per-task scores, one bar per method (tasks-Kshot.png likewise)
    manifest.json         sha256 of every file

While working, everything lives in the hidden sibling ``.DIR.partial``; it is
renamed to ``DIR`` when complete. Resumable: rerunning the same command after
an interruption continues from ``.DIR.partial``; rerunning it on a complete
``DIR`` (e.g. with more methods) reuses every method already trained and
evaluated there. Different settings are refused (``--overwrite`` starts over).

Methods: ``base`` (no training), every registered method (``retain.methods``),
any of them with ``-1shot`` (``--one-shot``: a natural-language
training example after the prompt, e.g. ``promot-1shot``), and the post-hoc
baselines (``retain.methods.posthoc``; no training, from the ``full`` run,
trained if missing): ``wise-ft``, interpolation ``(1-a) base + a full`` at
``--wise-alphas``, and ``lines``, layer-scaled updates at ``--lines-alphas``
and ``--lines-beta``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from retain import methods as registry
from retain.artifacts import check_output, check_writable, commit, sha256_file, staging_dir, write_json, write_text
from retain.config import TrainConfig
from retain.data import TaskFormat, check_template, load_jsonl, template_fields
from retain.distributed import begin, gather_sharded, is_main, main_only, on_main
from retain.engine import check_precision
from retain.errors import RetainError
from retain.evaluation.decoding import answer_budget, decoding, using
from retain.evaluation.harness import TunedSpec, evaluate_all, output_space, tuned_task_name
from retain.evaluation.metrics import resolve_metric
from retain.evaluation.suite import load_suite
from retain.methods import posthoc
from retain.workflows.options import CompareOptions
from retain.workflows.sweep import parse_sweep, run_config, run_of

SETTINGS = "compare.json"
RESULTS_FORMAT = 2  # 2: per-item units, standard errors, paired intervals
UNTRAINED = ("base", *posthoc.KINDS)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise RetainError("--methods: give at least one method, e.g. base,full,promot")
    known = registry.compare_names()
    for m in methods:
        if m not in UNTRAINED and m not in known:
            raise RetainError(f"--methods: unknown method '{m}' (choose from base, {', '.join(registry.names())}, "
                              "any of those with -1shot, wise-ft, lines)")
    return list(dict.fromkeys(methods))


def parse_alphas(text: str, flag: str = "--wise-alphas") -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise RetainError(f"{flag}: expected numbers like 0.25,0.5,0.75, got '{text}'") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise RetainError(f"{flag}: expected numbers in [0, 1], got '{text}'")
    return alphas


def _is_comparison(d: Path) -> bool:
    return (d / SETTINGS).is_file()


NO_EFFECT = ("eval_batch_size", "log_every", "save_every")  # training options that change speed or logs, not results


def _comparable(settings: dict) -> dict:
    """Settings as compared on resume: options without effect on the results may change, and a training
    option added to retain since the directory was written counts as its default."""
    opts = {**dataclasses.asdict(TrainConfig()), **settings.get("train_options", {})}
    return {**settings, "train_options": {k: v for k, v in opts.items() if k not in NO_EFFECT}}


def _first_difference(old: dict, new: dict, prefix: str = ""):
    """(dotted key, old value, new value) of the first setting that differs, looking inside nested settings."""
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{k}.")
            return f"{prefix}{k}", a, b
    return None


def _prepare_dir(out: Path, settings: dict, overwrite: bool) -> Path:
    """Return the staging dir to work in (resuming what can be resumed)."""
    staging = staging_dir(out)
    check_output(out, overwrite=True, owned=_is_comparison, kind="retain compare directory")
    if out.is_dir() and any(out.iterdir()) and not _is_comparison(out):
        raise RetainError(f"--output: {out} exists, is not empty and is not a retain compare directory; choose another path")
    for d in (staging, out):
        if not d.is_dir() or not any(d.iterdir()):
            continue
        if not _is_comparison(d):
            shutil.rmtree(d)
            continue
        old, new = _comparable(json.loads((d / SETTINGS).read_text())), _comparable(settings)
        diff = _first_difference(old, new)
        if diff is not None:
            if not overwrite:
                key, was, now = diff
                raise RetainError(f"--output: {d} holds a comparison with different settings ('{key}': "
                                  f"{was!r} there, {now!r} now); pass --overwrite to start over")
            shutil.rmtree(d)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    if out.is_dir() and _is_comparison(out):
        if staging.exists():  # a complete DIR and an interrupted continuation: keep the newer work
            shutil.rmtree(out)
        else:
            (out / "manifest.json").unlink(missing_ok=True)
            out.replace(staging)
    elif out.is_dir():
        out.rmdir()  # empty
    for d in (staging, staging / "runs", staging / "evals"):
        d.mkdir(parents=True, exist_ok=True)
    write_json(staging / SETTINGS, settings)
    return staging


@dataclasses.dataclass
class Inputs:
    """The checked inputs of a comparison: data, suite, tuned-task metric and output space."""

    train_rows: list[dict]
    val_rows: list[dict]
    tasks: list
    shots: list[int]
    metric: str
    space: object


def check_inputs(cfg: TrainConfig, opts: CompareOptions) -> Inputs:
    """Every check that can fail on the user's input, before any model is loaded."""
    if not cfg.train:
        raise RetainError("--train is required")
    if not cfg.validation:
        raise RetainError("--validation is required (the tuned task is scored on it)")
    check_precision(cfg)
    cfg.template = check_template(cfg.template)
    fields = template_fields(cfg.template)
    train_rows = load_jsonl(cfg.train, fields=fields, flag="--train")
    val_rows = load_jsonl(cfg.validation, fields=fields, flag="--validation")
    shots = opts.shot_counts()
    tasks = load_suite(opts.suite, examples=opts.examples)
    for t in tasks:
        t.demos(opts.seed, max(t.shots or shots), max(t.shots or shots))
    metric = resolve_metric(cfg.metric, [r["output"] for r in train_rows])
    return Inputs(train_rows, val_rows, tasks, shots, metric, output_space(train_rows))


def settings_of(cfg: TrainConfig, opts: CompareOptions, inputs: Inputs) -> dict:
    """What must not change for a comparison directory to be resumed or extended."""
    skip = ("method", "output", "one_shot", "resume", "overwrite", "train", "validation")
    settings = {"model": cfg.model, "train_sha256": sha256_file(cfg.train), "validation_sha256": sha256_file(cfg.validation),
                "suite": opts.suite, "shots": inputs.shots, "examples": opts.examples, "tuned_examples": opts.tuned_examples,
                "seed": opts.seed, "train_options": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip},
                "trials": opts.trials, "seeds": opts.seeds, "results_format": RESULTS_FORMAT,
                "decoding": decoding(opts.num_beams).record()}
    if opts.engine != "fast":  # recorded only when not the default, so that earlier directories still resume
        settings["engine"] = opts.engine
    if opts.suite != "builtin":
        settings["suite_sha256"] = hashlib.sha256(json.dumps([(t.name, t.template, t.metric, t.mode, t.examples) for t in inputs.tasks],
                                                             sort_keys=True).encode()).hexdigest()
    return settings


def expand(methods: list[str], opts: CompareOptions) -> list[str]:
    """The evaluated names in order: ``wise-ft`` and ``lines`` become one name per weight."""
    weights = {"wise-ft": (parse_alphas(opts.wise_alphas), None),
               "lines": (parse_alphas(opts.lines_alphas, "--lines-alphas"), opts.lines_beta)}
    order = []
    for method in methods:
        order += posthoc.names(method, *weights[method]) if method in weights else [method]
    return order


class Comparison:
    """One comparison directory being filled: trained runs and evaluations, each reused when present."""

    def __init__(self, cfg: TrainConfig, opts: CompareOptions, inputs: Inputs, staging: Path, tuned_name: str, log):
        self.cfg, self.opts, self.inputs, self.staging, self.tuned_name, self.log = cfg, opts, inputs, staging, tuned_name, log
        self.evals: dict[str, dict] = {}
        self._base = None

    def base(self):
        if self._base is None:
            from retain.models import load_model, model_options

            self._base = load_model(self.cfg.model, **model_options(self.cfg))
        return self._base

    def run_dir(self, method: str, s: int = 0) -> Path:
        """Where the trained run of ``method`` with training seed index ``s`` is (``train_missing`` trains it)."""
        return self.staging / "runs" / seeded(method, s)

    def eval_path(self, name: str, s: int) -> Path:
        return self.staging / "evals" / f"{seeded(name, s)}.json"

    def missing_runs(self, jobs: list[tuple[str, int]]) -> list[tuple[str, int, bool]]:
        """(method, seed index, resume) of every run that an evaluation still to do needs and that is not trained."""
        todo: list[tuple[str, int, bool]] = []
        for name, s in jobs:
            if name == "base" or self.eval_path(name, s).is_file():
                continue
            method = run_of(name)
            d = self.run_dir(method, s)
            if (d / "run.json").is_file():
                self.log(f"[compare] {seeded(method, s)}: already trained, reusing {d}")
            elif all((m, k) != (method, s) for m, k, _ in todo):
                todo.append((method, s, (d.parent / f".{d.name}.partial").is_dir()))
        return todo

    def train_missing(self, jobs: list[tuple[str, int]]) -> None:
        """Train the runs the evaluations need. Every process of a launch takes part (the training is
        data-parallel); which runs are missing is the main process's view."""
        from retain.workflows.train import train

        for method, s, resume in on_main(self.missing_runs, jobs):
            c = run_config(self.cfg, method, output=str(self.run_dir(method, s)), overwrite=False, seed=self.cfg.seed + s,
                           resume=resume)
            self.log(f"[compare] training {seeded(method, s)}")
            train(c, progress=self.log)

    def tuned(self, fmt, metric: str, max_new: int) -> TunedSpec:
        return TunedSpec(self.tuned_name, self.inputs.val_rows[: self.opts.tuned_examples], fmt, metric, max_new)

    def evaluate(self, name: str, s: int) -> dict:
        """Score one method (training it first if needed)."""
        from retain.run import load_run

        inputs, opts = self.inputs, self.opts
        common = dict(seed=opts.seed, batch_size=self.cfg.eval_batch_size, progress=True, space=inputs.space,
                      trials=opts.trials, engine=opts.engine)
        if name == "base":
            b = self.base()
            max_new = answer_budget(b.tokenizer, [r["output"] for r in inputs.train_rows], given=self.cfg.max_new_tokens)
            tuned = self.tuned(TaskFormat(self.cfg.template, None, b.is_seq2seq), inputs.metric, max_new)
            return evaluate_all(b.model, b.tokenizer, inputs.tasks, inputs.shots, is_seq2seq=b.is_seq2seq, tuned=tuned, **common)
        if posthoc.is_posthoc(name):
            ft, b = load_run(self.run_dir(run_of(name), s)), self.base()
            model = posthoc.posthoc_model(name.partition("@")[0], b.model, ft.model)
            tuned = self.tuned(TaskFormat(self.cfg.template, None, b.is_seq2seq), inputs.metric, ft.info.get("max_new_tokens", 32))
            return evaluate_all(model, b.tokenizer, inputs.tasks, inputs.shots, is_seq2seq=b.is_seq2seq, tuned=tuned,
                                train_seed=s, **common)
        r = load_run(self.run_dir(name, s))
        tuned = self.tuned(r.format, r.info.get("metric", inputs.metric), r.info.get("max_new_tokens", 32))
        return evaluate_all(r.model, r.tokenizer, inputs.tasks, inputs.shots, is_seq2seq=r.is_seq2seq, tuned_model=r.model_for(True),
                            tuned=tuned, tuned_prompt=r.has_prompt, train_seed=s, **common)

    def evaluated(self, name: str, s: int) -> dict:
        """The evaluation of ``name`` with seed index ``s``: read back if done, else computed (and saved by the
        main process; ``save_evaluations`` saves those other processes computed). Needs its run trained."""
        label = seeded(name, s)
        path = self.eval_path(name, s)
        if path.is_file():
            self.log(f"[compare] {label}: already evaluated")
            return json.loads(path.read_text())
        res = self.evaluate(name, s)
        res["method"] = label
        if is_main():
            write_json(path, res)
        self.log(f"[compare] {label}: tuned {res['tuned']['score'] if res.get('tuned') else '-'}, "
                 f"Norm. Avg. {res['norm_avg']}, format rate {res['format_rate']}")
        return res

    def evaluate_all(self, jobs: list[tuple[str, int]]) -> list[dict]:
        """Every job's evaluation; under a launch of N processes each evaluates its share (the models are loaded
        from the runs, one per process: nothing collective) and every process gets all of them."""
        return gather_sharded(jobs, lambda part: [self.evaluated(name, s) for name, s in part], independent=True)

    def save_evaluations(self, jobs: list[tuple[str, int]], results: list[dict]) -> None:
        for (name, s), res in zip(jobs, results):
            if not self.eval_path(name, s).is_file():
                write_json(self.eval_path(name, s), res)


def _results(cfg: TrainConfig, opts: CompareOptions, inputs: Inputs, title: str, tuned_name: str, evals: dict) -> dict:
    return {"title": title, "shots": inputs.shots, "tuned_task": tuned_name, "metric": inputs.metric,
            "output_space": inputs.space.describe() if inputs.space else None,
            "setup": {"model": cfg.model, "train": cfg.train, "validation": cfg.validation, "suite": opts.suite,
                      "shots": ",".join(map(str, inputs.shots)), "suite items per task": opts.examples or "suite default",
                      "tuned-task items": min(opts.tuned_examples, len(inputs.val_rows)), "steps (single-stage)": cfg.max_steps,
                      "promot steps": f"{cfg.stage1_steps} + {cfg.stage2_steps}", "seed": opts.seed,
                      "draws": f"{opts.trials} demonstration draw(s) x {opts.seeds} training seed(s)",
                      "decoding": f"beam search ({opts.num_beams} beams)" if opts.num_beams > 1 else "greedy, first line"},
            "decoding": decoding(opts.num_beams).record(), "trials": opts.trials, "seeds": opts.seeds,
            "methods": {name: merge_seeds(runs) for name, runs in evals.items()}}


def compare(cfg: TrainConfig, opts: CompareOptions, *, out: Path, title: str | None = None, tuned_name: str | None = None,
            log=print) -> dict:
    """Train (``cfg``: the training options; its method/output are ignored) and evaluate every method of
    ``opts.methods``; returns the results, written to ``out``.

    ``opts.trials``: draws of demonstrations (and test items) per suite task; ``opts.seeds``: trainings of every
    trained method with seeds ``cfg.seed + s``. Both enter the standard errors and the paired intervals."""
    from retain.evaluation.paired import compare_methods

    begin(cfg.deepspeed)  # under a launch of N processes: every one runs this; the main one writes
    log = main_only(log)
    cfg = dataclasses.replace(cfg, num_beams=opts.num_beams)  # checkpoint selection decodes as the evaluation
    out, title = Path(out), title or opts.title
    sweep = parse_sweep(opts.sweep)
    names = [v for n in expand(parse_methods(opts.methods), opts) for v in (sweep.names(n) if sweep else [n])]
    inputs = check_inputs(cfg, opts)
    staging = on_main(lambda: _prepare_dir(out, settings_of(cfg, opts, inputs), cfg.overwrite))
    tuned_name = tuned_name or tuned_task_name(cfg.train)
    work = Comparison(cfg, opts, inputs, staging, tuned_name, log)
    jobs = [(name, s) for name in names for s in range(1 if name == "base" else opts.seeds)]
    work.train_missing(jobs)
    with using(opts.num_beams):
        done = work.evaluate_all(jobs)

    def finish() -> dict:
        work.save_evaluations(jobs, done)
        evals: dict[str, list[dict]] = {}
        for (name, _), res in zip(jobs, done):
            evals.setdefault(name, []).append(res)
        results = _results(cfg, opts, inputs, title, tuned_name, evals)
        results["paired"] = compare_methods(results)
        write_outputs(results, staging, title, sweep)
        for p in staging.rglob("*.partial"):
            shutil.rmtree(p, ignore_errors=True)
        commit(staging, out)
        return results

    return on_main(finish)


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


def write_outputs(results: dict, root: Path, title: str, sweep=None) -> None:
    from retain.analysis.frontier import write_frontier
    from retain.evaluation.report import markdown_report, plot

    if sweep:  # each method's frontier over the swept values: results["frontier"], frontier.md, frontier.png
        write_frontier(results, root, sweep.fields, sweep.values)
    write_json(root / "results.json", results)
    write_text(root / "results.md", markdown_report(results, title))
    for k in results["shots"]:
        plot(results, root, k)

