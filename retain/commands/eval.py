"""``retain eval``: k-shot in-context evaluation of a run or a model on a suite.

For a run with a soft prompt the tuned task is scored with the prompt and every
other task without it (the paper's rule); ``--prompt on|off`` forces either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from retain.errors import RetainError

PROMPT_RULES = ("auto", "on", "off")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="k-shot in-context evaluation on a suite (Norm. Avg., format specialization)",
                       description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="a run directory written by 'retain train'")
    src.add_argument("--model", metavar="MODEL", help="a model spec (alias, .gguf, directory, Hub id)")
    add_eval_arguments(p)
    p.add_argument("--prompt", choices=PROMPT_RULES, default="auto",
                   help="soft prompt use: auto = tuned task with it, other tasks without (paper); on = everywhere; off = nowhere (default: auto)")
    p.add_argument("--tuned-data", metavar="FILE", help="JSONL of the tuned task to score in its own format (default: the run's --validation file)")
    p.add_argument("--tuned-examples", type=int, default=200, metavar="N", help="tuned-task items scored (the first N; default: 200)")
    p.add_argument("--output", metavar="FILE", help="write the full results as JSON here")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub (runs that code)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin/.pt) weights")
    p.set_defaults(func=run)


def add_eval_arguments(p, *, batch: bool = True) -> None:
    p.add_argument("--suite", default="builtin", help="'builtin', a folder of task .jsonl files, or a suite .yaml (default: builtin)")
    p.add_argument("--shots", default="4", help="comma-separated shot counts, e.g. 1,4 (default: 4); a YAML task's own 'shots' wins")
    p.add_argument("--examples", type=int, default=None, metavar="N", help="test items per suite task (default: 50, or the YAML's)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking test items and demonstrations (default: 0)")
    p.add_argument("--trials", type=int, default=1, metavar="K",
                   help="draws of demonstrations (and of test items, where a task has more rows than it scores), HELM-style; "
                        "draw t uses seed --seed + t; scores are their mean and the standard error includes their variance (default: 1)")
    if batch:
        p.add_argument("--batch-size", type=int, default=32, metavar="N", help="rows per forward pass (default: 32)")
    p.add_argument("--engine", choices=("fast", "simple"), default="fast",
                   help="fast: batched, shared few-shot prefix computed once; simple: one prompt at a time (reference)")


def parse_shots(text: str) -> list[int]:
    try:
        shots = [int(s) for s in str(text).split(",") if s.strip() != ""]
    except ValueError:
        raise RetainError(f"--shots: expected comma-separated integers like 1,4, got '{text}'") from None
    if not shots or any(s < 0 for s in shots):
        raise RetainError(f"--shots: expected non-negative integers like 1,4, got '{text}'")
    return list(dict.fromkeys(shots))


def check_common(args) -> tuple[list, list[int]]:
    """Validate suite/shots/batch flags and read the suite (before any model load)."""
    from retain.evaluation.suite import load_suite

    shots = parse_shots(args.shots)
    if args.examples is not None and args.examples <= 0:
        raise RetainError(f"--examples must be positive, got {args.examples}")
    if args.batch_size <= 0:
        raise RetainError(f"--batch-size must be positive, got {args.batch_size}")
    if args.trials <= 0:
        raise RetainError(f"--trials must be positive, got {args.trials}")
    tasks = load_suite(args.suite, examples=args.examples)
    for t in tasks:  # enough rows for the demonstrations, checked now rather than after a model load
        t.demos(args.seed, max(t.shots or shots), max(t.shots or shots))
    return tasks, shots


def check_output_file(path: str | None, flag: str = "--output") -> None:
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise RetainError(f"{flag}: {p} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RetainError(f"{flag}: cannot write to {probe} (permission denied)")


def write_json(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def tuned_spec_for_run(info: dict, data: str | None, n: int, *, is_seq2seq: bool, flag: str = "--tuned-data"):
    """The tuned task of a run (validation items, format, metric) and its output space."""
    from retain.data import TaskFormat, load_jsonl, template_fields
    from retain.evaluation.harness import TunedSpec, output_space

    cfg = info.get("config", {})
    fmt = TaskFormat(**info["format"], is_seq2seq=is_seq2seq)
    fields = template_fields(fmt.template)
    data = data or cfg.get("validation")
    examples = []
    if data:
        if not Path(data).is_file() and flag != "--tuned-data":
            data = None
        elif not Path(data).is_file():
            raise RetainError(f"{flag}: file not found: {data}")
    if data:
        examples = load_jsonl(data, fields=fields, flag=flag)[:n]
    space = None
    train_file = cfg.get("train")
    if train_file and Path(train_file).is_file():
        space = output_space(load_jsonl(train_file, fields=fields, flag="--train"))
    from retain.evaluation.compare import task_name

    name = task_name(cfg.get("train"))
    spec = TunedSpec(name, examples, fmt, info.get("metric", "accuracy"), info.get("max_new_tokens", 32)) if examples else None
    return spec, space


def run(args) -> None:
    tasks, shots = check_common(args)
    check_output_file(args.output)
    if args.tuned_examples <= 0:
        raise RetainError(f"--tuned-examples must be positive, got {args.tuned_examples}")
    from retain.evaluation.harness import evaluate_all, suite_table

    if args.run:
        from retain.run import load_run, read_run_info

        info = read_run_info(Path(args.run))
        run_ = load_run(args.run)
        tuned, space = tuned_spec_for_run(info, args.tuned_data, args.tuned_examples, is_seq2seq=run_.is_seq2seq,
                                          flag="--tuned-data" if args.tuned_data else "run.json validation")
        suite_prompt = args.prompt == "on" and run_.has_prompt
        tuned_prompt = args.prompt != "off" and run_.has_prompt
        res = evaluate_all(run_.model_for(suite_prompt), run_.tokenizer, tasks, shots, is_seq2seq=run_.is_seq2seq,
                           tuned_model=run_.model_for(tuned_prompt), tuned=tuned, space=space,
                           suite_prompt=suite_prompt, tuned_prompt=tuned_prompt, seed=args.seed, engine=args.engine,
                           batch_size=args.batch_size, progress=True, trials=args.trials)
        res["run"] = str(args.run)
        res["method"] = run_.method
    else:
        if args.prompt == "on":
            raise RetainError("--prompt on needs --run (a plain --model has no soft prompt)")
        if args.tuned_data:
            raise RetainError("--tuned-data needs --run (it scores a run's tuned task in its format)")
        from retain.models import load_model

        loaded = load_model(args.model, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
        res = evaluate_all(loaded.model, loaded.tokenizer, tasks, shots, is_seq2seq=loaded.is_seq2seq, seed=args.seed,
                           engine=args.engine, batch_size=args.batch_size, progress=True, trials=args.trials)
        res["model"] = args.model
    res["suite"] = args.suite
    for k in shots:
        print(f"\n{k}-shot")
        print(suite_table(res, k))
    if args.output:
        write_json(Path(args.output), res)
        print(f"\nwrote {args.output}")
