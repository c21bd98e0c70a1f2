"""Task metrics, each on a 0-100 scale.

Generation metrics compare a prediction (the model's first line, stripped) with
one or more references: ``accuracy``/``exact_match`` (normalised: lower case,
no punctuation or articles, folded white space), ``bleu`` and ``chrf``
(sacrebleu, corpus level), ``rouge1``/``rouge2``/``rougeL`` (rouge-score
F-measure, best reference per item, averaged).
"""

from __future__ import annotations

import re
import string
from typing import Sequence

METRICS = ("accuracy", "exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL")

_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _refs(references) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def per_item(metric: str, predictions: Sequence[str], references) -> list[float]:
    """Per-item scores (0-100) for the metrics that decompose over items."""
    refs = _refs(references)
    if metric in ("accuracy", "exact_match"):
        return [100.0 * any(normalize(p) == normalize(r) for r in rs) for p, rs in zip(predictions, refs)]
    if metric.startswith("rouge"):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
        return [100.0 * max(scorer.score(r, p)[metric].fmeasure for r in rs) for p, rs in zip(predictions, refs)]
    raise ValueError(f"metric {metric} is corpus-level")


def score(metric: str, predictions: Sequence[str], references) -> float:
    """Score predictions against references (a string or a list of strings per item)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if not predictions:
        return 0.0
    if metric in ("bleu", "chrf"):
        import sacrebleu

        refs = _refs(references)
        width = max(len(r) for r in refs)
        streams = [[rs[i] if i < len(rs) else rs[0] for rs in refs] for i in range(width)]
        fn = sacrebleu.corpus_bleu if metric == "bleu" else sacrebleu.corpus_chrf
        return float(fn(list(predictions), streams).score)
    items = per_item(metric, predictions, references)
    return sum(items) / len(items)
