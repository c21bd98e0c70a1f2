"""``retain analyze``: the analyses the ProMoT paper draws its conclusions from, measured while methods train.

Each trains every method of ``--methods`` with one budget through ``workflows.train.train`` (the one
training workflow; ``observe`` adds the measuring callbacks to each stage's Trainer: no second training
loop), with no checkpoint selection (``eval_every`` 0: the curve is the trajectory) and no resumable
checkpoints. Output directory ``DIR`` (built in ``.DIR.partial``, renamed when complete, with a manifest)::

    results.json    settings and every point, per method
    results.md      the table
    format_curve.png | gradients.png
    evals/METHOD/STAGE-STEP.json   format-curve: each point's full evaluation (every item's answer)
    runs/METHOD/    the trained runs, with --keep-runs

* ``format_curve``: ``analysis.curve`` (the paper's Fig. 2).
* ``gradients``: ``analysis.gradients`` (the paper's Fig. 3).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from retain import methods as registry
from retain.analysis import report
from retain.artifacts import check_output, commit, staging_dir, write_json, write_text
from retain.config import TrainConfig
from retain.errors import RetainError
from retain.workflows.options import CurveOptions, GradientOptions
from retain.workflows.sweep import run_config

LAYOUT = ("x = optimizer steps; a method's last stage runs from 0 to its steps, earlier stages before 0 "
          "(ProMoT: stage 1 from -stage1_steps to 0, stage 2 from 0), so full fine-tuning and ProMoT stage 2 "
          "share model-tuning steps")


def parse_methods(text: str) -> list[str]:
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    known = registry.compare_names()
    if not names:
        raise RetainError("--methods: give at least one method, e.g. full,promot")
    for m in names:
        if m not in known:
            raise RetainError(f"--methods: unknown method '{m}' (choose from {', '.join(registry.names())} or NAME-1shot)")
    return names


def _begin(cfg: TrainConfig) -> Path:
    if not cfg.train:
        raise RetainError("--train is required")
    if not cfg.output:
        raise RetainError("--output is required")
    out = Path(cfg.output)
    check_output(out, overwrite=cfg.overwrite, kind="retain analysis")
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _train_all(cfg: TrainConfig, names: list[str], staging: Path, observer, log) -> None:
    """Train every method with the measuring callbacks ``observer(name)(setup, trainer, stage)``."""
    from retain.workflows.train import train

    for name in names:
        c = run_config(cfg, name, output=str(staging / "runs" / name), overwrite=True, resume=False, eval_every=0, save_every=0)
        log(f"[analyze] training {name}")
        train(c, progress=log, observe=observer(name))


def _finish(staging: Path, out: Path, results: dict, md: str, keep_runs: bool) -> dict:
    if not keep_runs:
        shutil.rmtree(staging / "runs", ignore_errors=True)
    write_json(staging / "results.json", results)
    write_text(staging / "results.md", md)
    commit(staging, out)
    return results


def _steps(s, stage) -> tuple[int, int]:
    """(the stage's steps, where its step 0 lies on the shared axis)."""
    from retain.analysis.curve import stage_offsets

    steps = [st.budget(s.cfg)[0] for st in s.method.stages]
    i = s.method.stages.index(stage)
    return steps[i], stage_offsets(steps)[i]


def format_curve(cfg: TrainConfig, opts: CurveOptions, *, log=print) -> dict:
    """Train every method; score the suite and the tuned task at step 0 and every ``opts.every`` steps of each stage."""
    from retain.analysis.curve import CurvePoints
    from retain.evaluation.decoding import decoding, using
    from retain.evaluation.harness import TunedSpec, evaluate_all, tuned_task_name
    from retain.workflows.compare import check_inputs

    names = parse_methods(opts.methods)
    inputs = check_inputs(cfg, opts)
    tasks = _pick_tasks(inputs.tasks, opts.tasks)
    staging, tuned_name = _begin(cfg), tuned_task_name(cfg.train)
    points: dict[str, list] = {n: [] for n in names}

    def observer(name):
        def observe(s, trainer, stage):
            steps, offset = _steps(s, stage)
            tuned = TunedSpec(tuned_name, inputs.val_rows[: opts.tuned_examples], s.fmt, s.metric, s.max_new)

            def score(model):  # the suite as deployed for other tasks: without the soft prompt
                suite_model = model.get_base_model() if hasattr(model, "get_base_model") else model
                return evaluate_all(suite_model, s.loaded.tokenizer, tasks, inputs.shots, is_seq2seq=s.loaded.is_seq2seq,
                                    tuned_model=model, tuned=tuned, space=inputs.space, tuned_prompt=s.method.uses_prompt,
                                    seed=opts.seed, engine=opts.engine, batch_size=s.cfg.eval_batch_size, trials=opts.trials)

            def record(point, result):
                points[name].append(point)
                write_json(staging / "evals" / name / f"{point['stage']}-{point['stage_step']}.json", result, mkdir=True)
                k = str(inputs.shots[-1])
                log(f"[analyze] {name} step {point['step']}: format rate {point['format_rate'][k]['rate']}, "
                    f"Norm. Avg. {(point['norm_avg'][k] or {}).get('score')}, tuned {(point['tuned'] or {}).get('score')}")

            return [CurvePoints(score, record, inputs.space, stage=stage.name, steps=steps, offset=offset, every=opts.every,
                                start=stage == s.method.stages[0])]
        return observe

    cfg = dataclasses.replace(cfg, num_beams=opts.num_beams)
    with using(opts.num_beams):  # every score of the curve decodes as --num-beams says
        _train_all(cfg, names, staging, observer, log)
    results = {"analysis": "format-curve", "tuned_task": tuned_name, "shots": inputs.shots, "every": opts.every,
               "decoding": decoding(opts.num_beams).record(),
               "output_space": inputs.space.describe() if inputs.space else None, "layout": LAYOUT,
               "setup": _setup(cfg, opts), "tasks": [t.name for t in tasks], "methods": points}
    md = ["# Format specialization during training\n", f"{LAYOUT}. Output space: {results['output_space']}. Suite scored "
          "without the soft prompt, the tuned task with it (as deployed). ± standard errors.\n"]
    for k in inputs.shots:
        md += [f"## {k}-shot\n", report.curve_table(results, str(k)), ""]
    report.plot_curve(results, staging / "format_curve.png", str(inputs.shots[-1]))
    return _finish(staging, Path(cfg.output), results, "\n".join(md) + "\n", opts.keep_runs)


def _pick_tasks(tasks: list, names: str | None) -> list:
    if not names:
        return tasks
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    have = {t.name: t for t in tasks}
    for n in wanted:
        if n not in have:
            raise RetainError(f"--tasks: no task '{n}' in the suite (it has {', '.join(have)})")
    return [have[n] for n in wanted]


def _setup(cfg: TrainConfig, opts) -> dict:
    return {"options": dataclasses.asdict(opts),
            "train_options": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("output", "overwrite", "resume")}}


def gradients(cfg: TrainConfig, opts: GradientOptions, *, log=print) -> dict:
    """Train every method; in each stage that trains the model's weights, at step 0 and every ``opts.every`` steps,
    the cosine between the gradient on real and on label-shuffled probe batches, per module group."""
    from retain.analysis.gradients import GradientProbe, module_groups, probe_batches
    from retain.data import check_template, load_examples, template_fields

    names = parse_methods(opts.methods)
    for name in names:
        if not any(st.trains_model for st in registry.get(name.removesuffix("-1shot")).stages):
            raise RetainError(f"--methods: {name} trains no model weights; the gradient analysis measures the stages that do")
    cfg.template = check_template(cfg.template)
    examples = load_examples(cfg.train, fields=template_fields(cfg.template), flag="--train")
    if len(examples) < 2:
        raise RetainError(f"--train: {cfg.train} has {len(examples)} example(s); shuffling labels needs at least 2")
    staging = _begin(cfg)
    points: dict[str, list] = {n: [] for n in names}
    modules: dict[str, dict] = {}
    probes: dict[str, list] = {}

    def observer(name):
        def observe(s, trainer, stage):
            if not stage.trains_model:
                return []
            modules[name] = {g: names_ for g, (names_, _) in module_groups(trainer.model).items()}
            steps, offset = _steps(s, stage)
            batches = probe_batches(examples, s.loaded.tokenizer, s.fmt, s.max_length, batches=opts.probe_batches,
                                    size=s.cfg.batch_size, seed=s.cfg.seed)
            probes[name] = [{"examples": len(real), "outputs_changed": changed} for real, _, changed in batches]

            def record(point):
                points[name].append(point)
                log(f"[analyze] {name} step {point['step']}: cosine overall {point['cosine']['overall']['cosine']}")

            return [GradientProbe(trainer, batches, record, stage=stage.name, steps=steps, offset=offset, every=opts.every)]
        return observe

    _train_all(cfg, names, staging, observer, log)
    results = {"analysis": "gradients", "every": opts.every, "probe_batches": probes, "modules": modules,
               "layout": LAYOUT, "setup": _setup(cfg, opts), "methods": points}
    md = ["# Gradient on the real task vs on shuffled labels\n",
          "Cosine between the training-loss gradient on probe batches and on the same batches with outputs permuted "
          "among their examples (mean ± SE over the batches), per module of the last block and overall; "
          "stages that train the model's weights only; step 0 = that stage's start.\n",
          "Modules: " + "; ".join(f"{m}: " + ", ".join(f"{g} = {'/'.join(v)}" for g, v in groups.items())
                                  for m, groups in modules.items()) + "\n",
          "Probe batches (examples, outputs the shuffle changed): " + "; ".join(
              f"{m}: " + ", ".join(f"({b['examples']}, {b['outputs_changed']})" for b in bs) for m, bs in probes.items()) + "\n",
          report.gradient_table(results), ""]
    report.plot_gradients(results, staging / "gradients.png")
    return _finish(staging, Path(cfg.output), results, "\n".join(md) + "\n", opts.keep_runs)
