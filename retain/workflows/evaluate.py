"""``retain eval``: a run (the paper's prompt rule) or a plain model on a suite and on its tuned task."""

from __future__ import annotations

from pathlib import Path

from retain.artifacts import check_output_file, write_json
from retain.data import TaskFormat, load_jsonl, template_fields
from retain.errors import RetainError
from retain.evaluation.decoding import using
from retain.evaluation.harness import TunedSpec, evaluate_all, output_space, suite_table, tuned_task_name
from retain.evaluation.suite import load_suite
from retain.workflows.options import EvalCommand, EvalOptions


def check_suite(o: EvalOptions) -> tuple[list, list[int]]:
    """Read the suite and check its demonstrations (before any model load)."""
    shots = o.shot_counts()
    tasks = load_suite(o.suite, examples=o.examples)
    for t in tasks:  # enough rows for the demonstrations, checked now rather than after a model load
        t.demos(o.seed, max(t.shots or shots), max(t.shots or shots))
    return tasks, shots


def tuned_spec_for_run(info: dict, data: str | None, n: int, *, is_seq2seq: bool, flag: str = "--tuned-data"):
    """The tuned task of a run (validation items, format, metric) and its output space."""
    cfg = info.get("config", {})
    fmt = TaskFormat(**info["format"], is_seq2seq=is_seq2seq)
    fields = template_fields(fmt.template)
    data = data or cfg.get("validation")
    if data and not Path(data).is_file():
        if flag == "--tuned-data":
            raise RetainError(f"{flag}: file not found: {data}")
        data = None  # the run's validation file has moved: no tuned-task score
    examples = load_jsonl(data, fields=fields, flag=flag)[:n] if data else []
    train_file = cfg.get("train")
    space = output_space(load_jsonl(train_file, fields=fields, flag="--train")) if train_file and Path(train_file).is_file() else None
    name = tuned_task_name(cfg.get("train"))
    spec = TunedSpec(name, examples, fmt, info.get("metric", "accuracy"), info.get("max_new_tokens", 32)) if examples else None
    return spec, space


def _evaluate_run(o: EvalCommand, tasks, shots) -> dict:
    from retain.run import load_run, read_run_info

    info = read_run_info(Path(o.run))
    run = load_run(o.run)
    tuned, space = tuned_spec_for_run(info, o.tuned_data, o.tuned_examples, is_seq2seq=run.is_seq2seq,
                                      flag="--tuned-data" if o.tuned_data else "run.json validation")
    suite_prompt = o.prompt == "on" and run.has_prompt
    tuned_prompt = o.prompt != "off" and run.has_prompt
    res = evaluate_all(run.model_for(suite_prompt), run.tokenizer, tasks, shots, is_seq2seq=run.is_seq2seq,
                       tuned_model=run.model_for(tuned_prompt), tuned=tuned, space=space, suite_prompt=suite_prompt,
                       tuned_prompt=tuned_prompt, seed=o.seed, engine=o.engine, batch_size=o.batch_size, progress=True,
                       trials=o.trials)
    res["run"], res["method"] = str(o.run), run.method
    return res


def _evaluate_model(o: EvalCommand, tasks, shots) -> dict:
    if o.prompt == "on":
        raise RetainError("--prompt on needs --run (a plain --model has no soft prompt)")
    if o.tuned_data:
        raise RetainError("--tuned-data needs --run (it scores a run's tuned task in its format)")
    from retain.models import load_model, model_options

    loaded = load_model(o.model, **model_options(o))
    res = evaluate_all(loaded.model, loaded.tokenizer, tasks, shots, is_seq2seq=loaded.is_seq2seq, seed=o.seed,
                       engine=o.engine, batch_size=o.batch_size, progress=True, trials=o.trials)
    res["model"] = o.model
    return res


def evaluate(o: EvalCommand, log=print) -> dict:
    tasks, shots = check_suite(o)
    check_output_file(o.output)
    with using(o.num_beams):
        res = _evaluate_run(o, tasks, shots) if o.run else _evaluate_model(o, tasks, shots)
    res["suite"] = o.suite
    for k in shots:
        log(f"\n{k}-shot")
        log(suite_table(res, k))
    if o.output:
        write_json(Path(o.output), res, mkdir=True)
        log(f"\nwrote {o.output}")
    return res
