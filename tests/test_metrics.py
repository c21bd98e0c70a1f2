"""Scoring that is right by construction: strict matching with named leniency,
first-word accuracy, ROUGE for any script, per-task options in suites."""

import pytest

from conftest import ROOT, SHARED, cli, write_jsonl
from retain.evaluation.builtin import TASKS, builtin_examples
from retain.evaluation.metrics import CORPUS_METRICS, LENIENCY, METRICS, UnicodeTokenizer, canonical, normalize, per_item, score
from retain.evaluation.suite import Task, load_suite


# ------------------------------------------------------------ strictness
@pytest.mark.parametrize("metric", ["exact_match", "accuracy"])
def test_matching_is_strict_by_default(metric):
    assert score(metric, ["yellow"], ["YELLOW"]) == 0.0
    assert score(metric, [""], ["A"]) == 0.0  # "A" is an answer, not an article
    assert score(metric, ["the"], ["The"]) == 0.0
    assert score(metric, ["-5"], ["5"]) == 0.0
    assert score(metric, ["5."], ["5"]) == 0.0
    assert score(metric, ["  yellow \n"], ["yellow"]) == 100.0  # only surrounding white space is trimmed
    assert score(metric, ["e\u0301te\u0301"], ["\u00e9t\u00e9"]) == 100.0  # same text, decomposed (NFC)
    assert score(metric, ["yellow", "A", "-5"], ["yellow", "A", "5"]) == pytest.approx(200 / 3)


def test_uppercase_task_scores_a_lowercase_echo_zero():
    """Case is the task: echoing the input unchanged must not count as right."""
    by_name = {t.name: t for t in load_suite("builtin", examples=10)}
    up = by_name["uppercase"]
    rows = builtin_examples("uppercase")[:20]
    echo = [r["input"] for r in rows]
    assert all(e != r["output"] and e == r["output"].lower() for e, r in zip(echo, rows))
    assert score(up.metric, echo, [r["output"] for r in rows], options=up.match) == 0.0
    assert score(up.metric, [r["output"] for r in rows], [r["output"] for r in rows], options=up.match) == 100.0
    low = by_name["lowercase"]
    assert score(low.metric, ["APPLE", "apple"], ["apple", "apple"], options=low.match) == 50.0
    cap = by_name["country_capital"]  # the case of a capital's name carries no information
    assert score(cap.metric, ["paris", "PARIS", "Paris.", "Lyon"], ["Paris"] * 4, options=cap.match) == 50.0


def test_builtin_and_bench_suites_set_match_per_task():
    for name, row in TASKS.items():
        assert len(row) == 5 and set(row[4]) <= set(LENIENCY), name
    tasks = {t.name: t for t in load_suite("builtin", examples=5)}
    assert {n for n, t in tasks.items() if "ignore_case" in t.match} == {"plural", "country_capital", "color_of", "english_french"}
    for name in ("uppercase", "lowercase", "first_letter", "addition", "successor", "list_max"):
        assert tasks[name].match == ()
    bench = ROOT / "bench" / "icl_suite.yaml"
    if not (SHARED / "icl" / "capitalize.jsonl").is_file():
        pytest.skip("../shared/data/icl is not here")
    suite = {t.name: t for t in load_suite(str(bench))}
    for case_is_the_task in ("capitalize", "capitalize_first_letter", "lowercase_first_letter", "lowercase_last_letter"):
        assert suite[case_is_the_task].match == ()
    assert suite["ag_news"].metric == "accuracy" and suite["ag_news"].match == ("ignore_case",)
    assert suite["en_de"].match == ()


# ---------------------------------------------------------------- options
CASES = {  # option: (pairs it makes equal, pairs it leaves different)
    "ignore_case": ([("Paris", "paris"), ("STRASSE", "straße"), ("Émile", "émile")],
                    [("Paris.", "paris"), ("the paris", "paris"), ("new  york", "New York"), ("-5", "5")]),
    "ignore_punctuation": ([("St. John's!", "St Johns"), ("-5", "5"), ("«bonjour»", "bonjour"), ("positive.", "positive")],
                           [("$5", "5"), ("+5", "5"), ("Paris", "paris"), ("the cat", "cat"), ("a  b", "a b")]),
    "ignore_articles": ([("the cat", "cat"), ("A", ""), ("The Hague", "Hague"), ("go to the park", "go to park"), ("an apple", "apple")],
                        [("theory", "ory"), ("Cat", "cat"), ("cat.", "cat"), ("the big  cat", "big cat"), ("la mer", "mer")]),
    "ignore_whitespace": ([("New  York", "New York"), ("New\tYork", "New York"), (" a \n b ", "a b")],
                          [("NewYork", "New York"), ("new york", "New York"), ("the cat", "cat")]),
}


@pytest.mark.parametrize("option", LENIENCY)
def test_each_option_does_exactly_what_it_says(option):
    equal, different = CASES[option]
    for a, b in equal:
        assert canonical(a, (option,)) == canonical(b, [option]), (a, b)
        assert canonical(a) != canonical(b), (a, b)  # strict without it
        assert score("exact_match", [a], [b], options=(option,)) == 100.0
        assert score("exact_match", [a], [b]) == 0.0
    for a, b in different:
        assert canonical(a, (option,)) != canonical(b, (option,)), (a, b)
        assert score("exact_match", [a], [b], options=option) == 0.0  # one name may be a string


def test_canonical_and_unknown_options():
    assert LENIENCY == ("ignore_case", "ignore_punctuation", "ignore_articles", "ignore_whitespace")
    assert canonical("  The  Cat, sat!  ") == "The  Cat, sat!"
    assert canonical("  The  Cat, sat!  ", LENIENCY) == "cat sat"
    for bad in (lambda: canonical("x", ["ignore_caps"]), lambda: score("exact_match", ["x"], ["x"], options=["lower"]),
                lambda: per_item("rouge1", ["x"], ["x"], options=("nope",)), lambda: Task("t", [{"input": "a", "output": "b"}], match=("x",))):
        with pytest.raises(ValueError, match="ignore_case, ignore_punctuation, ignore_articles, ignore_whitespace"):
            bad()


def test_accuracy_compares_the_first_words_with_the_label():
    assert score("accuracy", ["positive review"], ["positive"]) == 100.0
    assert score("exact_match", ["positive review"], ["positive"]) == 0.0  # the whole answer
    assert score("accuracy", ["Positive"], ["positive"]) == 0.0
    assert score("accuracy", ["Positive"], ["positive"], options=["ignore_case"]) == 100.0
    assert score("accuracy", ["Positive review"], ["positive"], options=["ignore_case"]) == 100.0
    assert score("accuracy", ["positive.", "positive. yes"], ["positive"] * 2) == 0.0
    assert score("accuracy", ["positive.", "positive. yes"], ["positive"] * 2, options=["ignore_punctuation"]) == 100.0
    assert score("accuracy", ["not positive", "positively", ""], ["positive"] * 3) == 0.0
    # a label of n words: the first n words of the answer
    assert per_item("accuracy", ["New York City", "New", "New Yorker", "New  York"], ["New York"] * 4) == [100.0, 0.0, 0.0, 0.0]
    assert per_item("accuracy", ["New  York"], ["New York"], options=["ignore_whitespace"]) == [100.0]
    assert per_item("accuracy", ["A", "a) yes", "A is right"], ["A"] * 3) == [100.0, 0.0, 100.0]


def test_several_references_any_one_counts():
    refs = [["color", "colour"], ["grey", "gray"], ["Colour"]]
    assert per_item("exact_match", ["colour", "GRAY", "colour"], refs) == [100.0, 0.0, 0.0]
    assert per_item("exact_match", ["colour", "GRAY", "colour"], refs, options=("ignore_case",)) == [100.0, 100.0, 100.0]
    assert per_item("accuracy", ["gray cat", "negative"], [["grey", "gray"], ["positive", "neutral"]]) == [100.0, 0.0]
    r = per_item("rouge1", ["the cat sat"], [["a dog ran", "the cat sat"]])
    assert r == [100.0]


# ------------------------------------------------------------------ ROUGE
@pytest.mark.parametrize("metric", ["rouge1", "rouge2", "rougeL"])
def test_rouge_reads_any_script(metric):
    for text in ("我爱北京天安门", "東京タワーへ行きました", "한국어 문장입니다", "हिन्दी भाषा बोलती है", "Москва — столица России"):
        assert score(metric, [text], [text]) == 100.0, text
    part = score(metric, ["我爱北京天安门"], ["我爱上海外滩"])
    assert 0.0 < part < 100.0
    assert score(metric, ["我爱北京"], ["你好"]) == 0.0
    assert score("rouge1", ["été"], ["ôté"]) == 0.0
    assert score("rouge1", ["déjà vu"], ["deja vu"]) == 50.0  # accents are letters, not separators
    assert UnicodeTokenizer().tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs stay in their word
    assert UnicodeTokenizer().tokenize("我爱 NLP_tasks") == ["我", "爱", "nlp", "task"]


ENGLISH = [
    ("The cats were running quickly across the garden, weren't they?", "A cat ran quickly across gardens."),
    ("Stock markets fell 3.5% on Monday after the central bank raised rates.",
     "On Monday the central bank raised interest rates and stocks fell."),
    ("She said: \"I'll be there by 10:30 -- don't wait!\"", "She will arrive at 10:30; do not wait for her."),
    ("Researchers announced a new vaccine_trial in 2023 (phase III).", "A phase III vaccine trial was announced in 2023."),
]


@pytest.mark.parametrize("metric", ["rouge1", "rouge2", "rougeL"])
def test_rouge_on_english_is_rouge_score_default(metric):
    from rouge_score import rouge_scorer, tokenizers

    default = rouge_scorer.RougeScorer([metric], use_stemmer=True)
    ours = per_item(metric, [p for p, _ in ENGLISH], [r for _, r in ENGLISH])
    assert ours == [100.0 * default.score(r, p)[metric].fmeasure for p, r in ENGLISH]
    assert min(ours) > 0 and max(ours) < 100  # the sentences do differ
    # only text outside ASCII is read differently: rouge-score's default cuts "naïve" into "na" "ve"
    assert default.score("na ve", "naïve")[metric].fmeasure == 1.0
    assert per_item(metric, ["naïve"], ["na ve"]) == [0.0]
    stemmed = tokenizers.DefaultTokenizer(use_stemmer=True)
    for p, r in ENGLISH:
        assert UnicodeTokenizer().tokenize(p) == stemmed.tokenize(p)
        assert UnicodeTokenizer().tokenize(r) == stemmed.tokenize(r)


# -------------------------------------------------------------- public API
def test_public_api_corpus_metrics_and_misuse():
    assert METRICS == ("accuracy", "exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "sari")
    assert CORPUS_METRICS == ("bleu", "chrf")
    for m in CORPUS_METRICS:
        assert per_item(m, ["a b c"], ["a b c"]) is None
        assert score(m, ["the cat sat on the mat"], ["the cat sat on the mat"], options=["ignore_case"]) == pytest.approx(100.0)
    assert score("rouge1", ["The Cat"], ["the cat"], options=["ignore_case"]) == score("rouge1", ["The Cat"], ["the cat"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score("exact_match", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown metric"):
        per_item("f1", ["a"], ["a"])
    assert normalize("The Cat, sat!") == "cat sat"  # the format-specialization check's normaliser, unchanged


# ------------------------------------------------------------------- SARI
# The published examples of the reference implementation (HF evaluate's ``sari`` metric card and docstring,
# the tensor2tensor port of Xu et al. 2016's SARI.py): sources, predictions, references and their scores.
SARI_SOURCE = "About 95 species are currently accepted ."
SARI_REFS = ["About 95 species are currently known .", "About 95 species are now accepted .", "95 species are now accepted ."]


def test_sari_reproduces_the_reference_implementations_published_examples():
    assert score("sari", ["About 95 you now get in ."], [SARI_REFS], sources=[SARI_SOURCE]) == pytest.approx(26.953601953601954, abs=1e-9)
    assert score("sari", [SARI_SOURCE], [[SARI_SOURCE]], sources=[SARI_SOURCE]) == pytest.approx(100.0)
    # the metric card's "how to use" form, punctuation attached: the 13a tokenizer splits it off, same score
    card = score("sari", ["About 95 you now get in."], [[r.replace(" .", ".") for r in SARI_REFS]],
                 sources=["About 95 species are currently accepted."])
    assert card == pytest.approx(26.953601953601954, abs=1e-9)


def test_sari_is_per_item_reads_the_source_and_deletion_is_precision_only():
    preds = ["About 95 you now get in .", "About 95 species are now accepted ."]
    items = per_item("sari", preds, [SARI_REFS, SARI_REFS], sources=[SARI_SOURCE] * 2)
    assert score("sari", preds, [SARI_REFS] * 2, sources=[SARI_SOURCE] * 2) == pytest.approx(sum(items) / 2)
    assert items[1] > items[0]
    # the same answer against another source: keep/delete/add change, so the score does
    assert per_item("sari", preds[:1], [SARI_REFS], sources=["Some other sentence ."])[0] != pytest.approx(items[0])
    # deleting only words the references also delete is perfect deletion precision, whatever else stays:
    # "a b c" -> "a c" with reference "a": b is a good deletion (P_del = 1), keeping c costs only keep/add
    from retain.evaluation.metrics import _ngrams, _sari_ngram

    s, o, r = _ngrams("a b c"), _ngrams("a c"), _ngrams("a")
    assert _sari_ngram(s[0], o[0], [r[0]])[1] == 1.0  # precision 1 although recall (c not deleted) is 1/2
    with pytest.raises(ValueError, match="needs one source"):
        score("sari", preds, [SARI_REFS] * 2)


def test_sari_standard_error_uses_the_sources():
    from retain.evaluation import stats

    preds = ["About 95 you now get in .", "About 95 species are now accepted .", "95 species ."]
    unit = {"seed": 0, "trial": 0, "predictions": preds, "references": [SARI_REFS] * 3, "sources": [SARI_SOURCE] * 3}
    got = stats.summarize("sari", [unit])
    items = per_item("sari", preds, [SARI_REFS] * 3, sources=[SARI_SOURCE] * 3)
    import numpy as np

    assert got["se"] == pytest.approx(np.std(items, ddof=1) / np.sqrt(3), rel=1e-6)


def test_a_suite_task_scored_with_sari_reads_each_items_source():
    from retain.evaluation.harness import evaluate_suite
    from retain.evaluation.suite import Task as SuiteTask
    from retain.models import load_model

    loaded = load_model("tiny-random-llama")
    rows = [{"input": f"Item {i}: the big cat sat on the old mat .", "output": "The cat sat .", "source": f"the big cat {i} sat ."}
            for i in range(14)]
    task = SuiteTask("simp", rows, template="Simplify: {input}\n", metric="sari", n=4, max_new_tokens=3)
    res = evaluate_suite(loaded.model, loaded.tokenizer, [task], [0])["tasks"]["simp"]
    unit = res["units"]["0"][0]
    assert len(unit["sources"]) == 4 and all(src.startswith("the big cat") for src in unit["sources"])
    items = per_item("sari", unit["predictions"], unit["references"], sources=unit["sources"])
    assert res["scores"]["0"] == pytest.approx(sum(items) / 4, abs=1e-4)


# ------------------------------------------------------------------- YAML
def test_yaml_match_key_and_its_errors(tmp_path):
    write_jsonl(tmp_path / "caps.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(20)])
    (tmp_path / "s.yaml").write_text(
        "tasks:\n"
        "  - name: a\n    data: caps.jsonl\n    metric: exact_match\n    match: [ignore_case, ignore_whitespace]\n"
        "  - name: b\n    data: caps.jsonl\n    metric: accuracy\n    match: ignore_punctuation\n"
        "  - name: c\n    data: caps.jsonl\n    metric: exact_match\n"
        "  - {name: d, data: caps.jsonl, metric: exact_match, match: []}\n")
    tasks = {t.name: t.match for t in load_suite(str(tmp_path / "s.yaml"))}
    assert tasks == {"a": ("ignore_case", "ignore_whitespace"), "b": ("ignore_punctuation",), "c": (), "d": ()}
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "caps.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(20)])
    assert [t.match for t in load_suite(str(folder))] == [()]

    bad = {
        "name.yaml": ("tasks:\n  - name: a\n    data: caps.jsonl\n  - name: b\n    data: caps.jsonl\n    match: [ignore_case, ignore_accents]\n",
                      "name.yaml:4: field 'match': unknown option 'ignore_accents'"),
        "type.yaml": ("tasks:\n  - name: a\n    data: caps.jsonl\n    match: {ignore_case: true}\n", "type.yaml:2: field 'match'"),
        "metric.yaml": ("tasks:\n  - name: a\n    data: caps.jsonl\n    metric: chrf\n    match: ignore_case\n", "metric.yaml:2: field 'match'"),
    }
    for fname, (text, _) in bad.items():
        (tmp_path / fname).write_text(text)
    p = cli("eval", "--model", "tiny-random-llama", "--suite", tmp_path / "name.yaml", check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert bad["name.yaml"][1] in lines[0] and "ignore_case, ignore_punctuation, ignore_articles, ignore_whitespace" in lines[0]
    from retain.errors import RetainError

    for fname in ("type.yaml", "metric.yaml"):
        with pytest.raises(RetainError, match=bad[fname][1]):
            load_suite(str(tmp_path / fname))
