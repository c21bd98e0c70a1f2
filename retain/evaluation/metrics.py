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
* ``sari`` (text simplification; Xu et al. 2016): per item, the mean over n = 1..4 of
  the n-gram F1 of words *added* and *kept* and the precision of words *deleted*,
  each against the item's references and its **source** (``source_of``: the
  example's ``source`` field, else its input), a third each, times 100. A port of
  the reference implementation as HF ``evaluate``'s ``sari`` and EASSE compute it:
  lower case, sacrebleu's ``13a`` tokenizer, 0/0 = 1, the keep-recall fix of
  cocoxu/simplification issue 6; the corpus score is the mean over items.
  ``per_item``/``score`` take the sources (``sources=``); no library offers SARI
  here (sacrebleu has none; ``evaluate`` and ``easse`` are not in the lock).
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

METRICS = ("accuracy", "exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "sari")
CORPUS_METRICS = ("bleu", "chrf")
SOURCE_METRICS = ("sari",)  # scored against each item's source too (``sources=``, ``source_of``)
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


# ---------------------------------------------------------------- SARI
def source_of(example: dict) -> str:
    """The source text SARI compares an answer with: the example's ``source`` field, else its input."""
    return example.get("source") or example["input"]


@cache
def _tokenizer_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _ngrams(text: str) -> list[list[str]]:
    """1- to 4-grams of the text as the reference implementation reads it: lower case, 13a tokens split on spaces."""
    tokens = _tokenizer_13a()(text.lower()).split(" ")
    return [[" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)] for n in range(1, 5)]


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _sari_ngram(src: list[str], out: list[str], refs: list[list[str]]) -> tuple[float, float, float]:
    """(keep F1, delete precision, add F1) for one n-gram order; counts of source and output n-grams are
    multiplied by the number of references, as in the reference implementation."""
    from collections import Counter

    ref = Counter(g for r in refs for g in r)
    s = Counter({g: k * len(refs) for g, k in Counter(src).items()})
    o = Counter({g: k * len(refs) for g, k in Counter(out).items()})
    kept, kept_all = s & o, s & ref
    kept_good = kept & ref
    keep_p = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0
    deleted = s - o
    deleted_good = deleted - ref
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0
    added, wanted = set(o) - set(s), set(ref) - set(s)
    good = len(added & set(ref))
    add_p = good / len(added) if added else 1.0
    add_r = good / len(wanted) if wanted else 1.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI of one item, 0-100."""
    per_n = [_sari_ngram(s, o, list(r)) for s, o, *r in zip(_ngrams(source), _ngrams(prediction),
                                                            *[_ngrams(x) for x in references])]
    keep, delete, add = (sum(v[i] for v in per_n) / 4 for i in range(3))
    return 100.0 * (keep + delete + add) / 3


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


def per_item(metric: str, predictions: Sequence[str], references, *, options: str | Iterable[str] = (),
             sources: Sequence[str] | None = None) -> list[float] | None:
    """Per-item scores (0-100); None for the corpus-level metrics (``CORPUS_METRICS``).

    ``references``: per item a string or a list of strings (right if any
    matches; ROUGE takes the best). ``options`` (``LENIENCY`` names) apply to
    ``accuracy`` and ``exact_match`` only and are ignored by the others. ``sources``:
    each item's source text, needed by ``SOURCE_METRICS`` (``sari``), ignored by the others.
    """
    _check_metric(metric)
    opts = check_options(options)
    refs = _refs(predictions, references)
    if metric in CORPUS_METRICS:
        return None
    if metric in MATCH_METRICS:
        match = _first_word if metric == "accuracy" else _exact
        return [100.0 * any(match(p, r, opts) for r in rs) for p, rs in zip(predictions, refs)]
    if metric in SOURCE_METRICS:
        if sources is None or len(sources) != len(predictions):
            raise ValueError(f"{metric} needs one source text per prediction (sources=)")
        return [sari(s, p, rs) for s, p, rs in zip(sources, predictions, refs)]
    scorer = _rouge_scorer(metric)
    return [100.0 * max(scorer.score(r, p)[metric].fmeasure for r in rs) for p, rs in zip(predictions, refs)]


def score(metric: str, predictions: Sequence[str], references, *, options: str | Iterable[str] = (),
          sources: Sequence[str] | None = None) -> float:
    """Score predictions against references (a string or a list of strings per item), 0-100.

    Item-level metrics are the mean of ``per_item``; ``bleu``/``chrf`` are
    sacrebleu corpus scores. ``options`` and ``sources`` as for ``per_item``. No predictions: 0.
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
    items = per_item(metric, predictions, references, options=opts, sources=sources)
    return sum(items) / len(items)
