"""Export a retain suite as lm-evaluation-harness tasks (local files, no network).

For every task, writes into ``out_dir``:

* ``NAME_test.jsonl``: the test items retain scores (same seed, same order);
* ``NAME_demos.jsonl``: the demonstration pool, in retain's order; lm-eval's
  ``first_n`` sampler then takes exactly retain's k demonstrations;
* ``NAME.yaml``: a ``generate_until`` task (``dataset_path: json``, local
  ``data_files``), template ``doc_to_text``, target after ``" "``, few-shot
  delimiter ``"\\n\\n"``, greedy, stop at ``"\\n"``; scored by
  ``retain_lmeval_utils.py`` with retain's own metric functions (so the
  harness never fetches a metric from the Hub; its ROUGE would). SARI
  items are scored against their source (the ``source`` field, else the
  input), as retain scores them.

Log-likelihood tasks are exported as ``multiple_choice`` tasks. Build the
lm-eval model with ``hflm_kwargs(tokenizer)``: lm-eval then starts every
request with exactly the special tokens retain uses (a BOS where the
tokenizer adds one), so both score the same token sequences.
"""

from __future__ import annotations

import json
from pathlib import Path

from retain.evaluation.harness import max_new_tokens_for
from retain.evaluation.suite import SEPARATOR, Task


def hflm_kwargs(tokenizer) -> dict:
    """Keyword arguments for lm-eval's ``HFLM`` that make it add the special tokens retain adds."""
    from retain.tokens import special_affixes

    return {"add_bos_token": bool(special_affixes(tokenizer)[0])}


UTILS = '''"""Scoring for retain's exported tasks: retain's own metrics (offline)."""
from retain.evaluation.metrics import SOURCE_METRICS, per_item, score, source_of


def _pred(results):
    return results[0].strip().split("\\n")[0].strip()


def _refs(doc):
    return doc.get("references") or doc["output"]


def process_item(doc, results):
    metric = doc["_retain_metric"]
    if metric in ("bleu", "chrf"):
        return {"score": (_pred(results), _refs(doc), metric)}
    sources = [source_of(doc)] if metric in SOURCE_METRICS else None
    return {"score": per_item(metric, [_pred(results)], [_refs(doc)], options=doc.get("_retain_match", ()),
                              sources=sources)[0]}


def aggregate(items):
    if items and isinstance(items[0], tuple):
        preds, refs, metrics = zip(*items)
        return score(metrics[0], list(preds), list(refs))
    return sum(items) / len(items)
'''


def _jinja_template(template: str) -> str:
    """retain ``{field}`` templates as Jinja ``{{field}}``."""
    import string

    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{ '{' }}").replace("}", "{{ '}' }}") if ("{" in literal or "}" in literal) else literal)
        if name is not None:
            out.append("{{" + name + "}}")
    return "".join(out)


def export_suite(tasks: list[Task], shots: int, out_dir: Path, *, tokenizer=None, seed: int = 0, prefix: str = "retain_") -> list[str]:
    """Write lm-eval task files for ``tasks``; returns the lm-eval task names."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "retain_lmeval_utils.py").write_text(UTILS)
    names = []
    for task in tasks:
        test, pool = task.split(seed, max(shots, 1))
        demos = task.demos(seed, shots, max(shots, 1)) if shots else []
        order = demos + [p for p in pool if p not in demos]
        name = prefix + "".join(ch if ch.isalnum() else "_" for ch in task.name)
        files = {}
        for split, rows in (("test", test), ("demos", order)):
            path = out_dir / f"{name}_{split}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({**r, "_retain_metric": task.metric, "_retain_match": list(task.match)}, ensure_ascii=False) + "\n")
            files[split] = str(path.resolve())
        cfg = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": files["test"], "train": files["demos"]}},
            "test_split": "test",
            "fewshot_split": "train",
            "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": shots,
            "doc_to_text": _jinja_template(task.template),
            "target_delimiter": " ",
            "fewshot_delimiter": SEPARATOR,
        }
        if task.mode == "loglik":
            cfg.update({"output_type": "multiple_choice", "doc_to_choice": "{{choices}}" if not task.choices else task.choices,
                        "doc_to_target": "{{(choices if choices is defined else " + json.dumps(task.choices) + ").index(output)}}",
                        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]})
        else:
            mnt = max_new_tokens_for(task, tokenizer) if tokenizer is not None else (task.max_new_tokens or 32)
            cfg.update({"output_type": "generate_until", "doc_to_target": "{{output}}",
                        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": mnt},
                        "process_results": "!function retain_lmeval_utils.process_item",
                        "metric_list": [{"metric": "score", "aggregation": "!function retain_lmeval_utils.aggregate",
                                         "higher_is_better": True}]})
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        text = text.replace("'!function retain_lmeval_utils.process_item'", "!function retain_lmeval_utils.process_item")
        text = text.replace("'!function retain_lmeval_utils.aggregate'", "!function retain_lmeval_utils.aggregate")
        (out_dir / f"{name}.yaml").write_text(text)
        names.append(name)
    return names
