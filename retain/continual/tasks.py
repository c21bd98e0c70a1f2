"""Task folders: ``train.jsonl`` + ``validation.jsonl`` and a small task config.

A task's config (metric, template, max_new_tokens, constraint, source_prefix) comes from, in
order: the ``--task-config`` file's entry for the task's name, the folder's
``task.json``, the defaults (``rougeL``, ``{input}``). ``constraint: true``
means validation rows carry ``constraint`` (starts_with | contains |
ends_with) and ``word``; the share of outputs meeting it is reported too.
``source_prefix``: the instruction every input starts with; a metric that reads the
item's source (``sari``) compares the answer with the input without it (a row's
own ``source`` field, if it has one, wins).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from retain.data import check_template, load_jsonl, template_fields
from retain.errors import RetainError
from retain.evaluation.metrics import METRICS

TASK_KEYS = ("metric", "template", "max_new_tokens", "constraint", "source_prefix")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED = ("default", "__base__")


@dataclass
class Task:
    name: str
    path: str
    train: list[dict] = field(repr=False, default_factory=list)
    validation: list[dict] = field(repr=False, default_factory=list)
    metric: str = "rougeL"
    template: str = "{input}"
    max_new_tokens: int | None = None
    constraint: bool = False
    source_prefix: str | None = None

    def spec(self) -> dict:
        """What the registry records about a task (no data)."""
        return {"name": self.name, "path": self.path, "metric": self.metric, "template": self.template,
                "max_new_tokens": self.max_new_tokens, "constraint": self.constraint, "source_prefix": self.source_prefix}


def read_task_config(path: str | None) -> dict:
    if not path:
        return {}
    from retain.config import read_config_file

    data = read_config_file(path)
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise RetainError(f"--task-config {path}: entry '{name}' must be a mapping of {', '.join(TASK_KEYS)}")
    return data


def _settings(name: str, folder: Path, overrides: dict, source: str) -> dict:
    settings: dict = {}
    own = folder / "task.json"
    if own.is_file():
        try:
            settings.update(json.loads(own.read_text()))
        except ValueError as e:
            raise RetainError(f"{own}: malformed JSON ({e})") from None
        source = str(own)
    if name in overrides:
        settings.update(overrides[name])
        source = "--task-config"
    for key in settings:
        if key not in TASK_KEYS:
            raise RetainError(f"{source}: task '{name}': unknown key '{key}' (allowed: {', '.join(TASK_KEYS)})")
    metric = settings.get("metric", "rougeL")
    if metric not in METRICS:
        raise RetainError(f"{source}: task '{name}': unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    mnt = settings.get("max_new_tokens")
    if mnt is not None and (not isinstance(mnt, int) or mnt <= 0):
        raise RetainError(f"{source}: task '{name}': max_new_tokens must be a positive integer")
    if settings.get("source_prefix") is not None and not isinstance(settings["source_prefix"], str):
        raise RetainError(f"{source}: task '{name}': source_prefix must be a string")
    settings["template"] = check_template(settings.get("template", "{input}"), flag=f"{source}: task '{name}': template")
    return settings


def load_task(folder: str, overrides: dict, *, with_data: bool = True) -> Task:
    p = Path(folder)
    if not p.is_dir():
        raise RetainError(f"--tasks: {folder} is not a directory (expected a folder with train.jsonl and validation.jsonl)")
    name = p.resolve().name
    if not NAME.match(name) or name in RESERVED:
        raise RetainError(f"--tasks: {folder}: task name '{name}' (the folder name) must be letters, digits, '_' or '-' and not {' or '.join(RESERVED)}")
    s = _settings(name, p, overrides, "--task-config")
    fields = template_fields(s["template"])
    task = Task(name, str(p.resolve()), metric=s.get("metric", "rougeL"), template=s["template"],
                max_new_tokens=s.get("max_new_tokens"), constraint=bool(s.get("constraint", False)),
                source_prefix=s.get("source_prefix") or None)
    if with_data:
        task.train = load_jsonl(p / "train.jsonl", fields=fields, flag=f"--tasks {name}")
        task.validation = load_jsonl(p / "validation.jsonl", fields=fields + (("constraint", "word") if task.constraint else ()),
                                     flag=f"--tasks {name}")
        _add_sources(task, p / "validation.jsonl")
    return task


def _add_sources(task: Task, path: Path) -> None:
    """Each validation row's ``source`` (what ``sari`` compares with): its input without ``source_prefix``."""
    prefix = task.source_prefix
    if not prefix:
        return
    for i, row in enumerate(task.validation, 1):
        if "source" in row:
            continue
        if not row["input"].startswith(prefix):
            raise RetainError(f"{path}: row {i}: input does not start with task '{task.name}''s source_prefix {prefix!r}")
        row["source"] = row["input"][len(prefix):]


def load_tasks(folders: list[str], overrides: dict) -> list[Task]:
    tasks = [load_task(f, overrides) for f in folders]
    names = [t.name for t in tasks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RetainError(f"--tasks: task name '{sorted(dup)[0]}' given twice (task names are folder names)")
    return tasks


# ------------------------------------------------------------- constraints
def _strip_edges(text: str) -> str:
    return text.strip().strip(string.punctuation + "“”‘’ ").strip()


def meets_constraint(output: str, kind: str, word: str) -> bool:
    """CT0-style lexical constraint, case-insensitive, edge punctuation ignored."""
    out, w = _strip_edges(output).lower(), _strip_edges(word).lower()
    if not w:
        return True
    if kind == "starts_with":
        return _strip_edges(out.split()[0] if out.split() else "") == w or out.startswith(w + " ") or out == w
    if kind == "ends_with":
        return _strip_edges(out.split()[-1] if out.split() else "") == w or out.endswith(" " + w) or out == w
    if kind == "contains":
        return w in out
    raise RetainError(f"unknown constraint kind '{kind}' (expected starts_with, contains or ends_with)")


def constraint_rate(outputs: list[str], rows: list[dict]) -> float:
    if not outputs:
        return 0.0
    return 100.0 * sum(meets_constraint(o, r["constraint"], r["word"]) for o, r in zip(outputs, rows)) / len(outputs)
