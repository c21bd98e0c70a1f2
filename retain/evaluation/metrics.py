"""Task metrics, each on a 0-100 scale: the one place where answers are scored.

A prediction is the model's answer as given (for generated answers: the first
line of the continuation); each item has one reference or a list of them, and
an item is right if it matches any of them (ROUGE: best reference).

* ``exact_match``: the whole answer equals a reference.
* ``accuracy`` (classification, the ProMoT paper's rule): the **first word** of
  the answer equals the label; for a label of n words, the first n
  whitespace-separated words of the answer are compared with it, so
  ``positive review`` is right for ``positive``.

Both are **strict** by default, as in lm-evaluation-harness: only surrounding
white space is trimmed (and both texts are put in Unicode NFC form, so the same
characters written precomposed or decomposed are equal). ``yellow`` is not
``YELLOW``, ``A`` is an answer, ``-5`` is not ``5``. A task may name lenient
options (``LENIENCY``), applied to answer and references alike by ``canonical``:

* ``ignore_case``: compare case-folded text (``str.casefold``);
* ``ignore_punctuation``: delete every Unicode punctuation character (general
  category P: ``. , ; : ! ? ' " - ( ) [ ] { } / @ # % & * _`` and their
  non-ASCII forms); symbols such as ``+ $ = < > ^ | ~`` are kept;
* ``ignore_articles``: delete the English articles a, an, the (whole words, any
  case) and the white space after them;
* ``ignore_whitespace``: fold every internal run of white space to one space.

Options apply to ``accuracy`` and ``exact_match`` only; the other metrics
accept them (unknown names are still an error) and ignore them.

* ``bleu`` and ``chrf``: sacrebleu, corpus level (``CORPUS_METRICS``), several
  references allowed.
* ``rouge1``/``rouge2``/``rougeL``: rouge-score F-measure, best reference per
  item, averaged, with ``UnicodeTokenizer``: rouge-score's own tokenizer keeps
  ASCII letters and digits only (identical Chinese texts score 0, ``été`` and
  ``ôté`` both become ``t``). On plain English text it gives the same tokens as
  rouge-score's default with its Porter stemmer.

``normalize`` is the old lenient normaliser (lower case, no punctuation or
articles, folded spaces). It is **not** used for scoring: it serves the
format-specialization check (``harness.output_space``), which asks whether an
answer lies in the tuned task's output space whatever its spelling.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache

METRICS = ("accuracy", "exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL")
CORPUS_METRICS = ("bleu", "chrf")
MATCH_METRICS = ("accuracy", "exact_match")
LENIENCY = ("ignore_case", "ignore_punctuation", "ignore_articles", "ignore_whitespace")
LABEL_LIMIT = 20  # a task whose outputs take at most this many distinct values is a classification task
SHORT_ANSWER_WORDS = 3  # open tasks whose answers average at most this many words are scored by exact match


def is_classification(outputs: Iterable[str]) -> bool:
    """Do these (training) outputs take at most ``LABEL_LIMIT`` distinct values?"""
    return len(set(outputs)) <= LABEL_LIMIT


def auto_metric(outputs: Sequence[str]) -> str:
    """The metric ``auto`` stands for, from a task's outputs: ``accuracy`` for a classification task,
    ``exact_match`` for short answers (at most ``SHORT_ANSWER_WORDS`` words on average), else ``chrf``."""
    outputs = list(outputs)
    if is_classification(outputs):
        return "accuracy"
    words = sum(len(o.split()) for o in outputs) / max(len(outputs), 1)
    return "exact_match" if words <= SHORT_ANSWER_WORDS else "chrf"


def resolve_metric(metric: str, outputs: Sequence[str], flag: str = "--metric") -> str:
    """A metric name as given (``auto`` resolved from the outputs); an unknown name is a one-line error."""
    if metric == "auto":
        return auto_metric(outputs)
    if metric not in METRICS:
        from retain.errors import RetainError

        raise RetainError(f"{flag}: unknown metric '{metric}' (choose from auto, {', '.join(METRICS)})")
    return metric

# ------------------------------------------------------------- matching
def check_options(options: str | Iterable[str] | None) -> tuple[str, ...]:
    """The lenient options as a tuple (a single name may be given as a string).

    Raises ValueError naming the valid options for any other name.
    """
    if options is None:
        return ()
    opts = (options,) if isinstance(options, str) else tuple(options)
    for o in opts:
        if o not in LENIENCY:
            raise ValueError(f"unknown match option {o!r} (valid: {', '.join(LENIENCY)})")
    return tuple(dict.fromkeys(opts))


_ARTICLES = re.compile(r"(?<!\w)(?:a|an|the)(?!\w)\s*", re.IGNORECASE)


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def canonical(text: str, options: str | Iterable[str] = ()) -> str:
    """``text`` as ``accuracy``/``exact_match`` compare it under ``options``.

    Always: Unicode NFC form, surrounding white space trimmed. Then, if named:
    ``ignore_case`` (case-folded), ``ignore_punctuation`` (Unicode punctuation
    deleted), ``ignore_articles`` (English a/an/the deleted), ``ignore_whitespace``
    (internal runs of white space folded to one space).
    """
    opts = check_options(options)
    text = unicodedata.normalize("NFC", text)
    if "ignore_case" in opts:
        text = text.casefold()
    if "ignore_punctuation" in opts:
        text = _strip_punctuation(text)
    if "ignore_articles" in opts:
        text = _ARTICLES.sub("", text)
    if "ignore_whitespace" in opts:
        text = " ".join(text.split())
    return text.strip()


def _first_words(text: str, n: int) -> str:
    """The first n whitespace-separated words of ``text`` with the white space between them."""
    m = re.match(rf"\S+(?:\s+\S+){{{n - 1}}}", text)
    return m.group(0) if m else text


def _exact(prediction: str, reference: str, opts: tuple[str, ...]) -> bool:
    return canonical(prediction, opts) == canonical(reference, opts)


def _first_word(prediction: str, reference: str, opts: tuple[str, ...]) -> bool:
    label, answer = canonical(reference, opts), canonical(prediction, opts)
    n = len(label.split())
    if n == 0:  # an empty label is matched by an empty answer only
        return answer == ""
    return _first_words(answer, n) == label


# ---------------------------------------------------------------- ROUGE
# Scripts written without spaces between words: one token per character.
_CJK = ("\u1100-\u11ff\u3005-\u3007\u3021-\u3029\u3031-\u3035\u303b\u303c\u3040-\u30ff\u3130-\u318f"
        "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f"
        "\uffa0-\uffdc\U0001b000-\U0001b16f\U00020000-\U000323af")


@lru_cache(maxsize=1)
def _token_re() -> re.Pattern:
    # Combining marks (category M) are part of the word they follow: Python's \w
    # leaves them out, which would cut Devanagari, Thai or decomposed Latin words apart.
    marks, start = [], None
    for c in range(sys.maxunicode + 2):
        is_mark = c <= sys.maxunicode and unicodedata.category(chr(c)).startswith("M")
        if is_mark and start is None:
            start = c
        elif not is_mark and start is not None:
            marks.append(re.escape(chr(start)) + ("-" + re.escape(chr(c - 1)) if c - 1 > start else ""))
            start = None
    m = "".join(marks)
    return re.compile(rf"[{_CJK}][{m}]*|[^\W_{_CJK}](?:[^\W_{_CJK}]|[{m}])*")


def _porter():
    try:  # the stemmer rouge-score's DefaultTokenizer uses (nltk's Porter in rouge-score 0.1.2)
        from rouge_score.tokenizers import porter
    except ImportError:  # pragma: no cover - other rouge-score layouts
        from nltk.stem import porter
    return porter.PorterStemmer()


class UnicodeTokenizer:
    """ROUGE tokens for text in any script (a rouge-score ``Tokenizer``).

    Lower case (after Unicode NFC); a token is a run of Unicode word characters
    (``\\w`` without ``_``, with the combining marks that follow them), except
    that CJK ideographs, kana and hangul are one token per character (those
    scripts do not separate words with spaces). Like rouge-score, the Porter
    stemmer is applied to tokens longer than 3 characters, here to pure-ASCII
    ones only (it is an English stemmer). Other scripts written without spaces
    (Thai, Lao, Khmer, Myanmar) get one token per space-separated run.
    """

    def __init__(self, use_stemmer: bool = True):
        self._stemmer = _porter() if use_stemmer else None
        self._re = _token_re()

    def tokenize(self, text: str) -> list[str]:
        tokens = self._re.findall(unicodedata.normalize("NFC", text).lower())
        if self._stemmer is None:
            return tokens
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


@cache
def _rouge_scorer(metric: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([metric], tokenizer=UnicodeTokenizer())


# ---------------------------------------------------------------- public
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """The old lenient normaliser: lower case, ASCII punctuation and articles removed, spaces folded.

    For the format-specialization check only (``harness.output_space``), never
    for scoring: scoring uses ``canonical`` with each task's own options.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _refs(predictions: Sequence[str], references) -> list[list[str]]:
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(refs)} references")
    for i, rs in enumerate(refs):
        if not rs:
            raise ValueError(f"item {i} has no reference")
    return refs


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


def per_item(metric: str, predictions: Sequence[str], references, *, options: str | Iterable[str] = ()) -> list[float] | None:
    """Per-item scores (0-100); None for the corpus-level metrics (``CORPUS_METRICS``).

    ``references``: per item a string or a list of strings (right if any
    matches; ROUGE takes the best). ``options`` (``LENIENCY`` names) apply to
    ``accuracy`` and ``exact_match`` only and are ignored by the others.
    """
    _check_metric(metric)
    opts = check_options(options)
    refs = _refs(predictions, references)
    if metric in CORPUS_METRICS:
        return None
    if metric in MATCH_METRICS:
        match = _first_word if metric == "accuracy" else _exact
        return [100.0 * any(match(p, r, opts) for r in rs) for p, rs in zip(predictions, refs)]
    scorer = _rouge_scorer(metric)
    return [100.0 * max(scorer.score(r, p)[metric].fmeasure for r in rs) for p, rs in zip(predictions, refs)]


def score(metric: str, predictions: Sequence[str], references, *, options: str | Iterable[str] = ()) -> float:
    """Score predictions against references (a string or a list of strings per item), 0-100.

    Item-level metrics are the mean of ``per_item``; ``bleu``/``chrf`` are
    sacrebleu corpus scores. ``options`` as for ``per_item``. No predictions: 0.
    """
    _check_metric(metric)
    opts = check_options(options)
    if not predictions:
        return 0.0
    if metric in CORPUS_METRICS:
        import sacrebleu

        refs = _refs(predictions, references)
        width = max(len(r) for r in refs)
        streams = [[rs[i] if i < len(rs) else rs[0] for rs in refs] for i in range(width)]
        fn = sacrebleu.corpus_bleu if metric == "bleu" else sacrebleu.corpus_chrf
        return float(fn(list(predictions), streams).score)
    items = per_item(metric, predictions, references, options=opts)
    return sum(items) / len(items)
