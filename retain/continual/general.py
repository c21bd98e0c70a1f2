"""General ability: the switch's general class, and the deployed system scored on a general suite.

**The general class** ("none of my tasks" -> the base model, no adapter). Its pool of general
instructions (``--general-data``):

* ``builtin``: every item of every task of the built-in suite (``retain.evaluation.builtin``) asked as the
  suite asks it (``Task.prefix`` + ``Task.query``), 0-, 1- and 4-shot in turn, the demonstrations drawn
  (seeded) from the task's other rows; plus the generic instructions written for this project
  (``general_instructions.jsonl`` beside this file);
* a JSONL file: one instruction per line, string field ``input``;
* ``none``: no general class (every input goes to a task adapter, as in the paper).

The pool is split into groups (one per built-in task, one for the generic instructions; a file is one
group); each group is shuffled (seeded) and the groups interleaved, so that the ``--general-size``
instructions stored in the switch draw from every group alike; up to as many of the next ones are held
out to measure how general inputs are routed (``routing[...]["general_accuracy"]``).

**General ability** (``--general-suite``): after every stage the deployed system (the switch with its
adapters, or the model a baseline has trained so far) is scored on a suite with the evaluator of
``retain eval`` (``harness.evaluate_suite``; per-item units kept), the base model once before the first
stage; the change from the base (TRACE's general-ability delta) is the paired difference of the suite's
Norm. Avg. (``retain.evaluation.paired``). SwitchCIT is scored through its switch: every suite prompt is
routed and answered by the adapter (or the base) it is routed to.
"""

from __future__ import annotations

import random
from pathlib import Path

from retain.data import load_jsonl
from retain.errors import RetainError

GENERIC_FILE = Path(__file__).with_name("general_instructions.jsonl")
NONE = "none"
SYSTEM = "system"  # the deployed system's key in a paired comparison with "base"


# ------------------------------------------------------------------ the general class
def builtin_groups() -> list[list[str]]:
    """The built-in suite's items as it asks them (0-, 1-, 4-shot in turn), one group per task."""
    from retain.evaluation.suite import load_suite

    groups = []
    for task in load_suite("builtin"):
        rows, r = task.examples, random.Random(f"general:{task.name}")
        groups.append([task.prefix(r.sample(rows[:i] + rows[i + 1:], (0, 1, 4)[i % 3])) + task.query(row)
                       for i, row in enumerate(rows)])
    return groups


def read_pool(spec: str, flag: str = "--general-data") -> list[list[str]]:
    """The general instructions of ``spec`` ('builtin' or a JSONL file), in groups; [] for 'none'."""
    if spec == NONE:
        return []
    if spec == "builtin":
        return builtin_groups() + [[r["input"] for r in load_jsonl(GENERIC_FILE, fields=("input",), flag=flag)]]
    return [[r["input"] for r in load_jsonl(spec, fields=("input",), flag=flag)]]


def _interleave(groups: list[list[str]], seed: int) -> list[str]:
    """Each group shuffled (seeded), the groups interleaved; duplicates and blanks dropped."""
    r = random.Random(f"general:{seed}")
    shuffled = [r.sample(g, len(g)) for g in groups]
    order = [g[i] for i in range(max(map(len, shuffled), default=0)) for g in shuffled if i < len(g)]
    return list(dict.fromkeys(t for t in order if t.strip()))


def split_pool(groups: list[list[str]], size: int, seed: int) -> tuple[list[str], list[str]]:
    """(stored, held out) of the interleaved pool: the first ``size`` stored (leaving at least a fifth of a small
    pool held out), up to ``size`` more held out."""
    pool = _interleave(groups, seed)
    k = min(size, max(1, len(pool) - max(1, len(pool) // 5)))
    return pool[:k], pool[k:k + size]


def general_source(cfg, previous) -> str:
    """Where the general class comes from: the registry's own when extending one that has it, else ``--general-data``."""
    if previous is None or "general" not in previous.info:  # a registry written before the general class: add one
        return cfg.general_data
    return (previous.info["general"] or {}).get("source") or NONE


def held_out(source: str, stored: list[str], size: int, seed: int) -> list[str]:
    """Up to ``size`` general inputs of the pool that the switch was not trained on (none if it cannot be read now)."""
    try:
        groups = read_pool(source)
    except RetainError:
        return []
    seen = set(stored)
    return [t for t in _interleave(groups, seed) if t not in seen][:size]


# ------------------------------------------------------------------ general ability
def load_general_suite(cfg) -> list | None:
    """The general suite's tasks (checked: enough rows for the demonstrations), or None for 'none'."""
    if cfg.general_suite == NONE:
        return None
    from retain.evaluation.suite import load_suite

    tasks = load_suite(cfg.general_suite, examples=cfg.general_examples, flag="--general-suite")
    for t in tasks:
        t.demos(cfg.seed, max(t.shots or [cfg.general_shots]), max(t.shots or [cfg.general_shots]))
    return tasks


def check(cfg, writes_registry: bool) -> None:
    """Every general-ability input read and checked before any model is loaded (one RetainError line)."""
    fresh = writes_registry and cfg.general_data != NONE and not cfg.resume_from
    if fresh and not split_pool(read_pool(cfg.general_data), cfg.general_size, cfg.seed)[0]:
        raise RetainError(f"--general-data {cfg.general_data}: no instruction with text")
    load_general_suite(cfg)


def score_suite(model, tokenizer, tasks: list, cfg, *, is_seq2seq: bool, router=None) -> dict:
    """One scoring of the general suite (``retain eval``'s evaluator), with standard errors and per-item units."""
    from retain.evaluation.harness import evaluate_suite
    from retain.evaluation.stats import attach_summaries

    return attach_summaries(evaluate_suite(model, tokenizer, tasks, [cfg.general_shots], seed=cfg.seed, is_seq2seq=is_seq2seq,
                                           batch_size=cfg.eval_batch_size, router=router))


def stage_record(stage: str, base: dict, res: dict) -> dict:
    """A stage's general ability: Norm. Avg. ± SE, its paired difference from the base (TRACE's general-ability
    delta, with its 95% interval), per task, and the share of suite items the switch sent to the base."""
    from retain.evaluation.paired import compare_methods, comparison_key

    k = str(res["shots"][0])
    cmp = compare_methods({"methods": {"base": base, SYSTEM: res}, "shots": res["shots"]})[k][comparison_key("base", SYSTEM)]
    routes = [r for rec in res["tasks"].values() for u in rec["units"].get(k, []) for r in u.get("routes", [])]
    summary = res["norm_avg_summary"].get(k) or {}
    return {"stage": stage, "shots": int(k), "norm_avg": summary.get("score"), "se": summary.get("se"), "delta": cmp["norm_avg"],
            "tasks": {name: {"score": rec["summary"][k]["score"], "se": rec["summary"][k]["se"], "n": rec["n"],
                             "delta": cmp["tasks"].get(name)} for name, rec in res["tasks"].items() if k in rec["summary"]},
            "routed_to_base": round(100.0 * sum(r is None for r in routes) / len(routes), 2) if routes else None}
