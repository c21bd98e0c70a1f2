"""Score a model on a suite (k-shot) and on its tuned task; format specialization.

Results are plain dicts (written as JSON by ``retain eval``/``retain compare``)::

    {"shots": [4], "seed": 0,
     "tuned": {"name", "metric", "score", "n", "prompt": bool, "predictions": [...]},   # or None
     "tasks": {NAME: {"metric", "mode", "n", "prompt": bool,
                      "scores": {"4": 31.0}, "format_rate": {"4": 0.0 or None},
                      "examples": {"4": [{"input", "prediction", "reference"}, ...]}}},
     "norm_avg": {"4": 27.5},             # mean task score over the suite (paper's Norm. Avg.)
     "format_rate": {"4": 12.0 or None}}  # pooled over every counted item of every task

**Format-specialization rate** (0-100): the share of a suite task's generated
answers that fall in the tuned task's *output space*:

* classification tuned task (at most 20 distinct training outputs): the
  answer's first word (normalised) is the first word of one of its labels;
* open tuned task (translation, summaries): at least half of the answer's
  words (normalised) belong to the tuned task's *distinctive output
  vocabulary*: words seen at least twice in its training outputs and never in
  its training inputs (for En-Fr: French words that are not English).

Items whose own reference lies in that space are not counted (a sentiment ICL
task answered "positive" is not specialization), nor are log-likelihood tasks
(their answers are always one of their choices).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from retain.data import render
from retain.distributed import gather_sharded
from retain.evaluation import icl, stats
from retain.evaluation.decoding import answer_budget, current
from retain.evaluation.metrics import SOURCE_METRICS, is_classification, normalize, score, source_of
from retain.evaluation.suite import Task


# ------------------------------------------------------------ output space
@dataclass
class OutputSpace:
    kind: str  # "labels" | "vocab"
    labels: set = field(default_factory=set)
    vocab: set = field(default_factory=set)

    def contains(self, text: str) -> bool:
        words = normalize(text).split()
        if not words:
            return False
        if self.kind == "labels":
            return words[0] in self.labels
        return sum(w in self.vocab for w in words) * 2 >= len(words)

    def describe(self) -> str:
        if self.kind == "labels":
            return "first word in {" + ", ".join(sorted(self.labels)) + "}"
        return f"half the words in a {len(self.vocab)}-word output vocabulary"


def output_space(train_examples: list[dict]) -> OutputSpace | None:
    outputs = [e["output"] for e in train_examples]
    if not outputs:
        return None
    if is_classification(outputs):
        labels = {normalize(o).split()[0] for o in set(outputs) if normalize(o).split()}
        return OutputSpace("labels", labels=labels)
    out_words = Counter(w for o in outputs for w in normalize(o).split())
    in_words = {w for e in train_examples for w in normalize(e["input"]).split()}
    return OutputSpace("vocab", vocab={w for w, c in out_words.items() if c >= 2 and w not in in_words})


def format_hits(space: OutputSpace | None, predictions: list[str], references) -> list[bool]:
    """For every counted answer (its reference is not in the tuned output space), whether it falls in that space."""
    if space is None:
        return []
    return [space.contains(p) for p, r in zip(predictions, references)
            if not any(space.contains(x) for x in ([r] if isinstance(r, str) else list(r)))]


def format_counts(space: OutputSpace | None, predictions: list[str], references) -> tuple[int, int]:
    """(answers in the tuned output space, answers counted)."""
    hits = format_hits(space, predictions, references)
    return sum(hits), len(hits)


# ------------------------------------------------------------------ tasks
def max_new_tokens_for(task: Task, tokenizer) -> int:
    return answer_budget(tokenizer, [e["output"] for e in task.examples], cap=128, given=task.max_new_tokens)


def evaluate_task(model, tokenizer, task: Task, k: int, *, seed: int = 0, max_shots: int | None = None,
                  is_seq2seq: bool = False, engine: str = "fast", batch_size: int = 32, progress: bool = False,
                  router=None) -> dict:
    """Score one task k-shot; returns score, inputs, predictions, references.

    ``router`` (optional; a deployed system that picks a model per input, e.g. a SwitchCIT switch):
    ``router.route(prompts) -> keys`` and ``router.active(key)`` (a context manager in which ``model``
    answers as that key's model); each item is scored with its key's model and ``routes`` is returned."""
    test, _pool = task.split(seed, max(max_shots or k, k))
    demos = task.demos(seed, k, max(max_shots or k, k))
    prefix = task.prefix(demos)
    suffixes = [task.query(x) for x in test]
    refs = [task.references(x) for x in test]
    choices = [task.item_choices(x) for x in test] if task.mode == "loglik" else None
    desc = f"{task.name} {k}-shot"

    def predict(idx: list[int]) -> list[str]:
        part = [suffixes[i] for i in idx]
        if task.mode == "loglik":
            chs = [choices[i] for i in idx]
            if engine == "fast":
                ll = icl.loglik_shared(model, tokenizer, prefix, part, chs, is_seq2seq=is_seq2seq,
                                       batch_size=batch_size, progress=progress, desc=desc)
            else:
                ll = icl.loglik_simple(model, tokenizer, [prefix + s for s in part], chs, is_seq2seq=is_seq2seq)
            return [cs[max(range(len(cs)), key=lambda j: row[j])] for cs, row in zip(chs, ll)]
        mnt = max_new_tokens_for(task, tokenizer)
        if engine == "fast":
            return icl.generate_shared(model, tokenizer, prefix, part, is_seq2seq=is_seq2seq, max_new_tokens=mnt,
                                       batch_size=batch_size, progress=progress, desc=desc)
        return icl.generate_simple(model, tokenizer, [prefix + s for s in part], is_seq2seq=is_seq2seq,
                                   max_new_tokens=mnt, progress=progress, desc=desc)

    out = {"inputs": [x["input"] for x in test], "references": refs, "demos": [d["input"] for d in demos]}
    if router is None:
        preds = predict(list(range(len(test))))
    else:  # the deployed system: each item answered by the model its prompt is routed to
        routes = router.route([prefix + s for s in suffixes])
        preds = [""] * len(test)
        for key in dict.fromkeys(routes):
            idx = [i for i, r in enumerate(routes) if r == key]
            with router.active(key):
                for i, p in zip(idx, predict(idx)):
                    preds[i] = p
        out["routes"] = routes
    sources = [source_of(x) for x in test] if task.metric in SOURCE_METRICS else None  # sari reads each item's source
    if sources:
        out["sources"] = sources
    return {"score": round(score(task.metric, preds, refs, options=task.match, sources=sources), 4), "predictions": preds, **out}


def evaluate_tuned(model, tokenizer, examples: list[dict], fmt, metric: str, *, is_seq2seq: bool, max_new_tokens: int,
                   engine: str = "fast", batch_size: int = 32, progress: bool = False, shard: bool = False,
                   desc: str = "tuned task") -> dict:
    """Score a tuned task in its own format: template (and one-shot prefix), no other demonstrations.

    The one tuned-task scorer: ``retain eval``/``compare``, checkpoint selection while training (``shard``:
    the items are shared out over the processes of a distributed run) and the continual baselines."""
    prefix = fmt.shot_prefix()
    suffixes = [render(fmt.template, e) for e in examples]
    refs = [e.get("references") or e["output"] for e in examples]

    def generate(part: list[str]) -> list[str]:
        if engine == "fast":
            return icl.generate_shared(model, tokenizer, prefix, part, is_seq2seq=is_seq2seq, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, progress=progress, desc=desc)
        return icl.generate_simple(model, tokenizer, [prefix + s for s in part], is_seq2seq=is_seq2seq,
                                   max_new_tokens=max_new_tokens, progress=progress, desc=desc)

    preds = gather_sharded(suffixes, generate) if shard else generate(suffixes)
    sources = [source_of(e) for e in examples] if metric in SOURCE_METRICS else None  # sari reads each item's source
    return {"score": round(score(metric, preds, refs, sources=sources), 4), "predictions": preds, "references": refs, "n": len(examples),
            "inputs": [e["input"] for e in examples]}


def evaluate_suite(model, tokenizer, tasks: list[Task], shots: list[int], *, seed: int = 0, is_seq2seq: bool = False,
                   space: OutputSpace | None = None, engine: str = "fast", batch_size: int = 32, progress: bool = False,
                   prompted: bool = False, keep: int = 5, trials: int = 1, train_seed: int = 0, router=None) -> dict:
    """Every task at every shot count, ``trials`` draws of demonstrations (and test items where the pool
    allows; draw t uses seed ``seed + t``); per-item results kept as units, scores with their standard error
    (``retain.evaluation.stats``); Norm. Avg. and format rate per shot count. ``router``: see ``evaluate_task``
    (each unit then records the key every item was routed to, ``routes``)."""
    t0 = time.time()
    out = {"shots": list(shots), "seed": seed, "trials": trials, "decoding": current().record(), "tasks": {},
           "norm_avg": {}, "format_rate": {}}
    pooled = {str(k): [0, 0] for k in shots}
    for task in tasks:
        task_shots = task.shots or shots
        rec = {"metric": task.metric, "match": list(task.match), "mode": task.mode, "n": 0, "prompt": prompted,
               "max_new_tokens": max_new_tokens_for(task, tokenizer) if task.mode == "generate" else None,
               "scores": {}, "format_rate": {}, "examples": {}, "units": {}}
        for k in task_shots:
            units, hits, counted = [], 0, 0
            for t in range(trials):
                r = evaluate_task(model, tokenizer, task, k, seed=seed + t, max_shots=max(task_shots), is_seq2seq=is_seq2seq,
                                  engine=engine, batch_size=batch_size, progress=progress, router=router)
                units.append({"seed": train_seed, "trial": t, "inputs": r["inputs"], "predictions": r["predictions"],
                              "references": r["references"], "demos": r["demos"], **({"sources": r["sources"]} if "sources" in r else {}),
                              **({"routes": r["routes"]} if "routes" in r else {})})
                if task.mode == "generate" and space is not None:
                    h, c = format_counts(space, r["predictions"], r["references"])
                    hits, counted = hits + h, counted + c
                if t == 0:
                    rec["examples"][str(k)] = [{"input": i, "prediction": p, "reference": ref} for i, p, ref
                                               in list(zip(r["inputs"], r["predictions"], r["references"]))[:keep]]
            rec["n"] = len(units[0]["predictions"])
            rec["units"][str(k)] = units
            rec["scores"][str(k)] = round(sum(score(task.metric, u["predictions"], u["references"], options=task.match,
                                                    sources=u.get("sources")) for u in units) / len(units), 4)
            if task.mode == "generate" and space is not None:
                rec["format_rate"][str(k)] = round(100.0 * hits / counted, 2) if counted else None
                if str(k) in pooled:
                    pooled[str(k)][0] += hits
                    pooled[str(k)][1] += counted
            else:
                rec["format_rate"][str(k)] = None
        out["tasks"][task.name] = rec
    for k in shots:
        vals = [rec["scores"][str(k)] for rec in out["tasks"].values() if str(k) in rec["scores"]]
        out["norm_avg"][str(k)] = round(sum(vals) / len(vals), 4) if vals else None
        hits, counted = pooled[str(k)]
        out["format_rate"][str(k)] = round(100.0 * hits / counted, 2) if (space is not None and counted) else None
    out["wall_time_s"] = round(time.time() - t0, 2)
    return out


# ------------------------------------------------------------------ tables
def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pm(summary: dict | None, fallback) -> str:
    if not summary or summary.get("score") is None:
        return _fmt(fallback)
    return f"{summary['score']:.2f} ± {summary['se']:.2f}" if summary.get("se") is not None else _fmt(summary["score"])


def _n_cell(n) -> str:
    return f"{n}{' ' + stats.WARN if n and n < stats.SMALL_N else ''}"


def suite_table(results: dict, k: int) -> str:
    """Markdown table of one model's results at k shots: score ± standard error, n items."""
    key = str(k)
    lines = ["| task | metric | n | score ± SE | format rate |", "|---|---|---:|---:|---:|"]
    tuned = results.get("tuned")
    small = False
    if tuned:
        small |= tuned["n"] < stats.SMALL_N
        lines.append(f"| **{tuned['name']}** (tuned{', prompt' if tuned.get('prompt') else ''}) | {tuned['metric']} | "
                     f"{_n_cell(tuned['n'])} | {_pm(tuned.get('summary'), tuned['score'])} | |")
    for name, rec in results["tasks"].items():
        if key in rec["scores"]:
            metric = rec["metric"] + (f" ({', '.join(rec['match'])})" if rec.get("match") else "")
            small |= rec["n"] < stats.SMALL_N
            lines.append(f"| {name} | {metric} | {_n_cell(rec['n'])} | {_pm(rec.get('summary', {}).get(key), rec['scores'][key])} | "
                         f"{_fmt(rec['format_rate'].get(key))} |")
    na = results.get("norm_avg_summary", {}).get(key)
    lines.append(f"| **Norm. Avg.** | | | **{_pm(na, results['norm_avg'].get(key))}** | {_fmt(results['format_rate'].get(key))} |")
    if small:
        lines.append(f"\n{stats.WARN} fewer than {stats.SMALL_N} items: the score and its standard error are unreliable.")
    return "\n".join(lines)


def evaluate_all(suite_model, tokenizer, tasks: list[Task], shots: list[int], *, is_seq2seq: bool = False,
                 tuned_model=None, tuned: TunedSpec | None = None, space: OutputSpace | None = None,
                 suite_prompt: bool = False, tuned_prompt: bool = False, seed: int = 0, engine: str = "fast",
                 batch_size: int = 32, progress: bool = False, trials: int = 1, train_seed: int = 0) -> dict:
    """The suite (k-shot, with ``suite_model``) and the tuned task (with ``tuned_model``), with standard errors."""
    res = evaluate_suite(suite_model, tokenizer, tasks, shots, seed=seed, is_seq2seq=is_seq2seq, space=space,
                         engine=engine, batch_size=batch_size, progress=progress, prompted=suite_prompt, trials=trials,
                         train_seed=train_seed)
    res["tuned"] = None
    if tuned is not None and tuned.examples:
        r = evaluate_tuned(tuned_model if tuned_model is not None else suite_model, tokenizer, tuned.examples, tuned.format,
                           tuned.metric, is_seq2seq=is_seq2seq, max_new_tokens=tuned.max_new_tokens, engine=engine,
                           batch_size=batch_size, progress=progress)
        res["tuned"] = {"name": tuned.name, "metric": tuned.metric, "match": [], "score": r["score"], "n": r["n"],
                        "prompt": tuned_prompt, "max_new_tokens": tuned.max_new_tokens,
                        "units": [{"seed": train_seed, "trial": 0, "inputs": r["inputs"], "predictions": r["predictions"],
                                   "references": r["references"]}],
                        "examples": [{"prediction": p, "reference": ref} for p, ref in list(zip(r["predictions"], r["references"]))[:5]]}
    res["output_space"] = space.describe() if space is not None else None
    return stats.attach_summaries(res)


def tuned_task_name(train_file) -> str:
    """A readable name for the tuned task: the file's stem, or its folder's for train.jsonl."""
    if not train_file:
        return "tuned"
    p = Path(train_file).resolve()
    return (p.parent.name if p.stem in ("train", "training") else p.stem) or "tuned"


@dataclass
class TunedSpec:
    """The fine-tuned task: validation items, its format (template, one-shot), metric."""

    name: str
    examples: list[dict]
    format: object  # retain.data.TaskFormat
    metric: str
    max_new_tokens: int = 32
