"""Evaluation suites: tasks, k-shot prompts, and how suites are read.

A suite is one of

* ``builtin``: the project's own offline tasks (``retain.evaluation.builtin``);
* a folder of task files ``NAME.jsonl`` (string fields ``input``, ``output``;
  optional ``choices``: a list of strings for log-likelihood scoring), each
  with the default template ``Input: {input}\\nOutput:``;
* a YAML file::

      shots: [1, 4]            # optional default for every task
      examples: 50             # optional default: test items per task
      tasks:
        - name: capitals
          data: capitals.jsonl # relative to the YAML file
          template: "Q: What is the capital of {input}?\\nA:"
          metric: exact_match  # accuracy exact_match bleu chrf rouge1 rouge2 rougeL sari (default: auto; sari: against each row's "source", else its input)
          match: [ignore_case] # optional leniency for accuracy/exact_match (default: strict)
          mode: generate       # or loglik (needs choices)
          choices: [yes, no]   # optional, for loglik; else each row's "choices"
          shots: [1, 4]
          examples: 50
          max_new_tokens: 16

``match`` (a list of names, or one name): the lenient options of
``accuracy``/``exact_match`` (``retain.evaluation.metrics.LENIENCY``):
``ignore_case``, ``ignore_punctuation``, ``ignore_articles`` (English a/an/the),
``ignore_whitespace`` (fold internal runs of white space). Without it answers
are compared strictly (surrounding white space trimmed only). Set only what the
task's answer format allows: not ``ignore_case`` where case is the task, not
``ignore_articles`` where ``A`` can be an answer, not ``ignore_punctuation``
where a sign or an apostrophe is part of it. It is refused with an explicit
``bleu``/``chrf``/``rouge`` metric (they do not use it); folder suites use none.

k-shot prompts (fixed seed): the task's rows are shuffled with a generator
seeded by (seed, task name); the first 8 rows with distinct inputs (more if
more shots are asked for) are the demonstration pool, the next ``examples``
rows with new inputs are the test items, and the *same* first k
demonstrations precede every test item (1-shot uses the first of the 4). Demonstrations and
test items therefore never overlap, and the shared few-shot prefix can be
computed once per task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from retain.data import check_template, load_jsonl, render, target_text, template_fields
from retain.errors import RetainError, where
from retain.evaluation.metrics import LENIENCY, MATCH_METRICS, METRICS, auto_metric, check_options

DEFAULT_TEMPLATE = "Input: {input}\nOutput:"
SEPARATOR = "\n\n"
DEMO_POOL = 8
MODES = ("generate", "loglik")


@dataclass
class Task:
    name: str
    examples: list[dict]
    template: str = DEFAULT_TEMPLATE
    metric: str = "auto"
    mode: str = "generate"
    shots: list[int] | None = None  # None: the command's --shots
    n: int = 50
    choices: list[str] | None = None
    max_new_tokens: int | None = None
    source: str = ""
    match: tuple[str, ...] = ()  # leniency of accuracy/exact_match (metrics.LENIENCY); () = strict

    def __post_init__(self):
        if self.metric == "auto":
            self.metric = auto_metric([e["output"] for e in self.examples])
        self.match = check_options(self.match)  # ValueError for a name not in LENIENCY

    # --------------------------------------------------------------- split
    def split(self, seed: int, max_shots: int) -> tuple[list[dict], list[dict]]:
        """(test items, demonstration pool), disjoint, from a seeded shuffle.

        The first ``max(8, max_shots)`` rows (unique inputs) of the shuffle are
        the demonstration pool; test items are the next ``n`` rows whose input
        is neither a demonstration's input nor an earlier test item's.
        """
        rows = list(self.examples)
        random.Random(f"{seed}:{self.name}").shuffle(rows)
        pool, test, seen = [], [], set()
        for row in rows:
            if row["input"] in seen:
                continue
            seen.add(row["input"])
            if len(pool) < max(DEMO_POOL, max_shots):
                pool.append(row)
            elif len(test) < self.n:
                test.append(row)
        return test, pool

    def demos(self, seed: int, k: int, max_shots: int) -> list[dict]:
        test, pool = self.split(seed, max_shots)
        if k > len(pool) or not test:
            raise RetainError(f"{self.source or self.name}: task '{self.name}' has too few examples for {k} demonstrations beside its test items")
        return pool[:k]

    # ------------------------------------------------------------- prompts
    def shot_text(self, demo: dict) -> str:
        p = render(self.template, demo, self.source or self.name)
        return p + target_text(p, demo["output"], False) + SEPARATOR

    def prefix(self, demos: list[dict]) -> str:
        return "".join(self.shot_text(d) for d in demos)

    def query(self, item: dict) -> str:
        return render(self.template, item, self.source or self.name)

    def item_choices(self, item: dict) -> list[str] | None:
        return item.get("choices") or self.choices

    def references(self, item: dict):
        return item.get("references") or item["output"]


# ---------------------------------------------------------------- loading
def load_suite(spec: str, *, examples: int | None = None, flag: str = "--suite") -> list[Task]:
    """Read a suite: ``builtin``, a folder of JSONL files or a YAML file."""
    if spec == "builtin":
        from retain.evaluation.builtin import TASKS, builtin_examples

        return [Task(name, builtin_examples(name), template=t[1], metric=t[2], n=examples or 50, source=f"builtin:{name}",
                     match=t[4]) for name, t in TASKS.items()]
    path = Path(spec)
    if not path.exists():
        raise RetainError(f"{flag}: no such file or folder: {spec} (give 'builtin', a folder of .jsonl task files or a .yaml suite)")
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise RetainError(f"{flag}: folder {path} holds no .jsonl task files")
        return [Task(f.stem, load_jsonl(f, flag=flag), n=examples or 50, source=str(f)) for f in files]
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return _load_yaml(path, examples, flag)
    if path.suffix.lower() == ".jsonl":
        return [Task(path.stem, load_jsonl(path, flag=flag), n=examples or 50, source=str(path))]
    raise RetainError(f"{flag}: {path} is neither a folder, a .jsonl task nor a .yaml suite")


_TASK_KEYS = {"name", "data", "template", "metric", "mode", "choices", "shots", "examples", "max_new_tokens", "match"}


def _load_yaml(path: Path, examples: int | None, flag: str) -> list[Task]:
    import yaml

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise RetainError(f"{where(path, mark.line + 1 if mark else None)}: not valid YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise RetainError(f"{path}: a suite file must be a mapping with a non-empty list 'tasks'")
    lines = _task_lines(text)
    default_shots = doc.get("shots")
    default_n = doc.get("examples", 50)
    tasks, names = [], set()
    for i, entry in enumerate(doc["tasks"]):
        line = lines[i] if i < len(lines) else None
        if not isinstance(entry, dict):
            raise RetainError(f"{where(path, line)}: task {i + 1} must be a mapping")
        tasks.append(_task_from_entry(path, entry, line, names, default_shots,
                                      default_n if examples is None else examples))
    return tasks


def _task_from_entry(path: Path, entry: dict, line: int | None, names: set, default_shots, default_n) -> Task:
    """One task of a YAML suite: its entry checked (``names``: the task names so far, this one is added), its rows read."""
    loc = lambda f: where(path, line, f)
    unknown = set(entry) - _TASK_KEYS
    if unknown:
        raise RetainError(f"{loc(sorted(unknown)[0])} is not a task option (options: {', '.join(sorted(_TASK_KEYS))})")
    for key in ("name", "data"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise RetainError(f"{loc(key)} is missing or not a string")
    name = entry["name"]
    if name in names:
        raise RetainError(f"{loc('name')}: task '{name}' appears twice")
    names.add(name)
    data = Path(entry["data"])
    if not data.is_absolute():
        data = path.parent / data
    template = entry.get("template", DEFAULT_TEMPLATE)
    if not isinstance(template, str):
        raise RetainError(f"{loc('template')} must be a string")
    try:
        template = check_template(template, flag=loc("template"))
    except RetainError:
        raise
    metric = entry.get("metric", "auto")
    if metric != "auto" and metric not in METRICS:
        raise RetainError(f"{loc('metric')}: unknown metric '{metric}' (choose from auto, {', '.join(METRICS)})")
    match = _entry_match(entry.get("match"), metric, loc)
    mode = entry.get("mode", "generate")
    if mode not in MODES:
        raise RetainError(f"{loc('mode')}: unknown mode '{mode}' (choose from {', '.join(MODES)})")
    shots, n, choices, mnt = _entry_sizes(entry, loc, default_shots, default_n)
    fields = template_fields(template)
    rows = load_jsonl(data, fields=fields, flag=loc("data"))
    if mode == "loglik" and choices is None and not all(isinstance(r.get("choices"), list) for r in rows):
        raise RetainError(f"{loc('mode')}: loglik needs 'choices' on the task or a 'choices' list on every row of {data}")
    return Task(name, rows, template=template, metric=metric, mode=mode, shots=shots, n=n,
                choices=choices, max_new_tokens=mnt, source=str(path), match=tuple(match))


def _entry_match(match, metric: str, loc) -> list:
    """A task entry's ``match``: a list of LENIENCY names, for a metric that uses them."""
    match = [] if match is None else [match] if isinstance(match, str) else match
    if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
        raise RetainError(f"{loc('match')} must be an option name or a list of them ({', '.join(LENIENCY)})")
    bad = [m for m in match if m not in LENIENCY]
    if bad:
        raise RetainError(f"{loc('match')}: unknown option '{bad[0]}' (choose from {', '.join(LENIENCY)})")
    if match and metric != "auto" and metric not in MATCH_METRICS:
        raise RetainError(f"{loc('match')}: applies to {' and '.join(MATCH_METRICS)} only, not to metric '{metric}'")
    return match


def _entry_sizes(entry: dict, loc, default_shots, default_n) -> tuple:
    """A task entry's (shots, examples, choices, max_new_tokens), checked in that order."""
    shots = entry.get("shots", default_shots)
    if shots is not None:
        shots = [shots] if isinstance(shots, int) else shots
        if not isinstance(shots, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shots):
            raise RetainError(f"{loc('shots')} must be a non-negative integer or a list of them")
    n = entry.get("examples", default_n)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise RetainError(f"{loc('examples')} must be a positive integer")
    choices = entry.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or len(choices) < 2):
        raise RetainError(f"{loc('choices')} must be a list of at least two strings")
    mnt = entry.get("max_new_tokens")
    if mnt is not None and (not isinstance(mnt, int) or mnt <= 0):
        raise RetainError(f"{loc('max_new_tokens')} must be a positive integer")
    return shots, n, choices, mnt


def _task_lines(text: str) -> list[int]:
    """Line numbers (1-based) where each task entry of the YAML starts (best effort)."""
    import yaml

    try:
        node = yaml.compose(text)
        for key, value in node.value:
            if key.value == "tasks":
                return [item.start_mark.line + 1 for item in value.value]
    except Exception:
        pass
    return []

