"""The tasks a run trains on: one (``--train FILE``, as always) or several (multi-task: ``--train NAME=FILE`` repeated,
or ``--tasks FILE``), each with its data, template and metric.

Multi-task runs (docs/METHODS.md, "Several tasks"): a stage that trains only the soft prompt runs once per task on
that task's data, into that task's PEFT prompt adapter (named after the task); any other stage trains on the mixture
of every task's examples, each example carrying its own task's prompt (frozen) where the method has prompts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from retain.data import TaskFormat, check_template, load_examples, load_jsonl, pick_one_shot, template_fields, tokenize
from retain.distributed import is_main
from retain.errors import RetainError
from retain.evaluation.decoding import answer_budget
from retain.evaluation.harness import tuned_task_name
from retain.evaluation.metrics import resolve_metric

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TASK_KEYS = ("name", "train", "validation", "template", "metric")
RESERVED_NAMES = ("default",)  # PEFT's name for a run's single adapter (saved without a sub-folder)


@dataclass
class TaskSpec:
    """One task as given: its name, files, template and metric, and where it was given (for error messages)."""

    name: str
    train: str
    validation: str | None
    template: str
    metric: str
    where: str


def task_specs(cfg) -> list[TaskSpec]:
    """The run's tasks from ``--tasks`` or ``--train``/``--validation``, checked (names, duplicates, templates);
    the files are read by ``load_task``. One unnamed ``--train FILE`` is the single task as always."""
    if cfg.tasks:
        if cfg.train or cfg.validation:
            raise RetainError("--tasks: give the tasks either in a tasks file or with --train/--validation, not both")
        specs = _from_file(Path(cfg.tasks), cfg)
    else:
        if not cfg.train:
            raise RetainError("--train is required")
        specs = _from_flags(_as_list(cfg.train), _as_list(cfg.validation), cfg)
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise RetainError(f"{s.where}: task '{s.name}' is given twice")
        seen.add(s.name)
        s.template = check_template(s.template, flag=f"{s.where} template" if len(specs) > 1 else "--template")
    if len(specs) > 1 and len({s.validation is None for s in specs}) > 1:
        bare = next(s for s in specs if s.validation is None)
        raise RetainError(f"{bare.where}: task '{bare.name}' has no validation file; give every task one (checkpoints are "
                          "kept by the mean of the tasks' validation scores) or none")
    return specs


def _as_list(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _named(text: str) -> tuple[str | None, str]:
    """``NAME=FILE`` -> (NAME, FILE); a plain path (or one whose part before '=' is no task name) -> (None, text)."""
    name, eq, path = text.partition("=")
    return (name, path) if eq and NAME.match(name) else (None, text)


def _check_name(name: str, where: str) -> None:
    if not NAME.match(name) or name in RESERVED_NAMES:
        raise RetainError(f"{where}: '{name}' is not a usable task name (letters, digits, '_', '.', '-'; not "
                          f"{', '.join(RESERVED_NAMES)})")


def _from_flags(trains: list[str], vals: list[str], cfg) -> list[TaskSpec]:
    named = [_named(t) for t in trains]
    if len(named) == 1 and named[0][0] is None:  # the single task, exactly as before
        if len(vals) > 1 or (vals and _named(vals[0])[0] is not None and not Path(vals[0]).exists()):
            raise RetainError("--validation: name the task in --train too (--train NAME=FILE --validation NAME=FILE)")
        return [TaskSpec(tuned_task_name(trains[0]), trains[0], vals[0] if vals else None, cfg.template, cfg.metric, "--train")]
    if any(n is None for n, _ in named):
        bad = next(t for t, (n, _) in zip(trains, named) if n is None)
        raise RetainError(f"--train {bad}: name every task when giving several (--train NAME=FILE)")
    specs = {}
    for name, path in named:
        _check_name(name, f"--train {name}")
        if name in specs:
            raise RetainError(f"--train: task '{name}' is given twice")
        specs[name] = TaskSpec(name, path, None, cfg.template, cfg.metric, f"--train {name}")
    for v in vals:
        name, path = _named(v)
        if name is None:
            raise RetainError(f"--validation {v}: name its task (--validation NAME=FILE; tasks: {', '.join(specs)})")
        if name not in specs:
            raise RetainError(f"--validation {name}: unknown task '{name}' (tasks: {', '.join(specs)})")
        if specs[name].validation is not None:
            raise RetainError(f"--validation: task '{name}' is given twice")
        specs[name].validation = path
    return list(specs.values())


def _read_tasks_file(path: Path) -> list:
    from retain.config import read_structured

    data = read_structured(path, "--tasks")
    if isinstance(data, dict) and set(data) == {"tasks"}:
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise RetainError(f"--tasks: {path} must hold a non-empty list of tasks (or 'tasks:' with one)")
    return data


def _from_file(path: Path, cfg) -> list[TaskSpec]:
    specs = []
    for i, entry in enumerate(_read_tasks_file(path), 1):
        where = f"--tasks {path}: task {i}"
        if not isinstance(entry, dict):
            raise RetainError(f"{where}: expected a mapping with {', '.join(TASK_KEYS)}")
        unknown = [k for k in entry if k not in TASK_KEYS]
        if unknown:
            raise RetainError(f"{where}: unknown key '{unknown[0]}' (keys: {', '.join(TASK_KEYS)})")
        for key in ("name", "train"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise RetainError(f"{where}: '{key}' is required (a string)")
        for key in ("validation", "template", "metric"):
            if key in entry and not isinstance(entry[key], str):
                raise RetainError(f"{where} ({entry['name']}): '{key}' must be a string")
        _check_name(entry["name"], where)
        here = f"{where} ({entry['name']})"
        specs.append(TaskSpec(entry["name"], _relative(entry["train"], path), _relative(entry.get("validation"), path),
                              entry.get("template", cfg.template), entry.get("metric", cfg.metric), here))
    return specs


def _relative(file: str | None, tasks_file: Path) -> str | None:
    if file is None or file.startswith("hf:") or Path(file).is_absolute():
        return file
    return str(tasks_file.parent / file)


# ---------------------------------------------------------------- loaded tasks
@dataclass
class Task:
    """A task ready to train: its examples, format (template, one-shot), metric, tokenized rows."""

    spec: TaskSpec
    train: list[dict]
    validation: list[dict]
    metric: str
    fmt: TaskFormat | None = None
    rows: list[dict] | None = None
    truncated: int = 0
    max_new: int = 32

    @property
    def name(self) -> str:
        return self.spec.name


def load_task(spec: TaskSpec, single: bool) -> Task:
    """Read a task's files and resolve its metric (before any model is loaded). ``single``: the flags' names as before."""
    fields = template_fields(spec.template)
    train_flag, val_flag = ("--train", "--validation") if single else (spec.where, spec.where.replace("--train", "--validation"))
    train = load_examples(spec.train, fields=fields, flag=train_flag)
    val = load_jsonl(spec.validation, fields=fields, flag=val_flag) if spec.validation else []
    return Task(spec, train, val, resolve_metric(spec.metric, [e["output"] for e in train]))


def prepare_task(task: Task, tokenizer, *, is_seq2seq: bool, one_shot: bool, seed: int, max_length: int,
                 max_new_tokens: int | None) -> None:
    """Format and tokenize a task (the model's tokenizer is loaded now)."""
    task.fmt = TaskFormat(task.spec.template, pick_one_shot(task.train, seed) if one_shot else None, is_seq2seq)
    data = tokenize(task.train, tokenizer, task.fmt, max_length)
    task.rows, task.truncated = data.rows, data.truncated
    task.max_new = answer_budget(tokenizer, [e["output"] for e in task.train], given=max_new_tokens)
    if data.truncated and is_main():
        sys.stderr.write(f"[retain] note: {data.truncated} training examples{'' if single_name(task) else ' of ' + task.name} "
                         f"are longer than {max_length} tokens; their prompts were cut from the left so the output is kept\n")


def single_name(task: Task) -> bool:
    return task.spec.where == "--train"


def task_record(task: Task) -> dict:
    """A task as run.json records it (``retain.run.task_info`` reads it back)."""
    return {"name": task.name, "train": task.spec.train, "validation": task.spec.validation, "template": task.fmt.template,
            "one_shot": task.fmt.one_shot, "metric": task.metric, "max_new_tokens": task.max_new,
            "examples": {"train": len(task.rows), "validation": len(task.validation), "truncated": task.truncated}}
