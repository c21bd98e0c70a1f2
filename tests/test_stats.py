"""Uncertainty of every figure: retain.evaluation.stats and .paired, and the report built on them (numpy data, no models)."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from retain.evaluation import paired, stats
from retain.evaluation.report import comparison_table, markdown_report, paired_table, plot


def unit(correct, seed=0, trial=0, tag="w"):
    """A unit whose item i is right (exact match) iff correct[i]."""
    refs = [f"{tag}{i}" for i in range(len(correct))]
    preds = [r if c else "wrong" for r, c in zip(refs, correct)]
    return {"seed": seed, "trial": trial, "inputs": list(refs), "predictions": preds, "references": refs}


def draw(p, n, rng):
    return rng.random(n) < p


# ------------------------------------------------------------------ summarize
def test_closed_form_se_matches_hand_computation():
    s = stats.summarize("exact_match", [unit([1, 1, 0, 1, 0])])
    # scores 100,100,0,100,0: mean 60, sample variance (3*40^2 + 2*60^2)/4 = 3000
    assert s["method"] == "closed form"
    assert s["score"] == pytest.approx(60.0)
    assert s["se"] == pytest.approx(math.sqrt(3000) / math.sqrt(5))
    assert (s["n"], s["n_units"]) == (5, 1)
    assert stats.summarize("exact_match", [unit([1])])["se"] == 0.0


def test_bootstrap_se_close_to_closed_form():
    x = draw(0.4, 200, np.random.default_rng(0))
    closed = stats.summarize("exact_match", [unit(x)])
    # three seeds with identical answers: no seed variance, so the hierarchical bootstrap is a bootstrap over items
    boot = stats.summarize("exact_match", [unit(x, seed=s) for s in range(3)], n_boot=2000)
    assert boot["method"] == "hierarchical bootstrap"
    assert boot["score"] == pytest.approx(closed["score"])
    assert boot["se"] == pytest.approx(closed["se"], rel=0.15)
    assert boot == stats.summarize("exact_match", [unit(x, seed=s) for s in range(3)], n_boot=2000)  # deterministic


def test_corpus_metric_summary_is_a_bootstrap():
    refs = [f"le chat {i} est noir" for i in range(30)]
    preds = [f"le chien {i % 4} est {'noir' if i % 3 else 'blanc'}" for i in range(30)]
    s = stats.summarize("chrf", [{"seed": 0, "trial": 0, "inputs": refs, "predictions": preds, "references": refs}])
    assert s["method"] == "bootstrap"
    assert s["se"] > 0
    assert 0 < s["score"] < 100
    assert s["n"] == 30


@pytest.mark.parametrize("metric", ["chrf", "bleu"])
def test_corpus_resamples_from_statistics_equal_rescoring(metric, monkeypatch):
    """The fast path (sacrebleu statistics summed per resample) gives exactly what re-scoring every resample gives."""
    refs = [[f"the cat {i} sat on the mat", f"a cat {i} was on a mat"] if i % 2 else f"the dog {i} ran home"
            for i in range(30)]
    preds = [f"the {'cat' if i % 3 else 'dog'} {i % 5} sat on a mat" for i in range(30)]
    units = [{"seed": s, "trial": 0, "inputs": preds, "predictions": preds[s:] + preds[:s], "references": refs}
             for s in range(2)]
    other = [dict(units[0], predictions=[r if isinstance(r, str) else r[0] for r in refs])]
    fast = (stats.summarize(metric, units[:1], n_boot=30), stats.summarize(metric, units, n_boot=30),
            paired.paired(metric, units, other, n_boot=30))
    assert stats._grid(metric, units).suff is not None
    monkeypatch.setattr(stats, "_corpus_stats", lambda *a: None)
    assert stats._grid(metric, units).suff is None
    slow = (stats.summarize(metric, units[:1], n_boot=30), stats.summarize(metric, units, n_boot=30),
            paired.paired(metric, units, other, n_boot=30))
    for f, s in zip(fast, slow):
        for key in ("score", "se", "diff"):
            if key in f:
                assert f[key] == pytest.approx(s[key], rel=1e-9, abs=1e-9)
        if "ci" in f:
            assert f["ci"] == pytest.approx(s["ci"], rel=1e-9, abs=1e-9)
    assert fast[2]["diff"] > 0 and fast[2]["n_boot"] == 30


def test_hierarchical_se_includes_trial_variance():
    rng = np.random.default_rng(1)
    trials = [unit(draw(p, 100, rng), trial=t) for t, p in enumerate([0.2, 0.5, 0.8])]
    single = stats.summarize("exact_match", trials[1:2])
    multi = stats.summarize("exact_match", trials)
    assert multi["method"] == "hierarchical bootstrap"
    assert multi["n_units"] == 3 and multi["n"] == 100
    assert multi["score"] == pytest.approx(np.mean([stats.summarize("exact_match", [t])["score"] for t in trials]))
    assert multi["se"] > 1.5 * single["se"]


def test_options_reach_the_metric():
    import inspect

    from retain.evaluation import metrics

    if "options" not in inspect.signature(metrics.per_item).parameters:
        pytest.skip("metrics without lenient options")
    u = {"seed": 0, "trial": 0, "inputs": ["a", "b"], "predictions": ["YES", "no"], "references": ["yes", "no"]}
    assert stats.summarize("exact_match", [u])["score"] == 50.0
    assert stats.summarize("exact_match", [u], options=("ignore_case",))["score"] == 100.0
    assert paired.paired("exact_match", [u], [u], options=("ignore_case",))["diff"] == 0.0


def test_norm_avg_se_formula():
    out = stats.norm_avg({"a": {"score": 10.0, "se": 3.0}, "b": {"score": 20.0, "se": 4.0},
                          "c": {"score": None, "se": None}})
    assert out == {"score": 15.0, "se": pytest.approx(5.0 / 2), "n_tasks": 2}


# ------------------------------------------------------------------ paired
def test_paired_ci_excludes_zero_for_better_b_and_includes_it_for_identical():
    rng = np.random.default_rng(2)
    a, b = unit(draw(0.4, 100, rng)), unit(draw(0.85, 100, rng))
    better = paired.paired("exact_match", [a], [b])
    assert better["diff"] == pytest.approx(stats.summarize("exact_match", [b])["score"] - stats.summarize("exact_match", [a])["score"])
    assert better["diff"] > 0 and better["ci"][0] > 0 and better["significant"]
    assert paired.paired("exact_match", [b], [a])["ci"][1] < 0  # B minus A
    same = paired.paired("exact_match", [a], [dict(a)])
    assert same["diff"] == 0 and same["ci"][0] <= 0 <= same["ci"][1] and not same["significant"]
    assert same["mcnemar_p"] == 1.0


def test_pairing_uses_the_same_items():
    """B = A plus a constant gain on every item: a paired interval is tight, an unpaired one would not be."""
    rng = np.random.default_rng(3)
    x = draw(0.5, 100, rng)
    y = x.copy()
    y[np.flatnonzero(~x)[:5]] = True  # B fixes 5 of A's errors, nothing else changes
    p = paired.paired("exact_match", [unit(x)], [unit(y)])
    assert p["diff"] == pytest.approx(5.0)
    assert p["ci"][0] > 0 and p["ci"][1] - p["ci"][0] < 10
    assert p["mcnemar_p"] == pytest.approx(binomtest(5, 5, 0.5).pvalue)


def test_mcnemar_matches_binomtest_on_hand_counted_pairs():
    a = [1] * 30 + [1, 1] + [0] * 9 + [0] * 19
    b = [1] * 30 + [0, 0] + [1] * 9 + [0] * 19
    # discordant: A right/B wrong = 2, A wrong/B right = 9
    p = paired.paired("exact_match", [unit(a)], [unit(b)])
    assert p["mcnemar_p"] == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    # several draws per side: no McNemar
    assert paired.paired("exact_match", [unit(a), unit(a, trial=1)], [unit(b), unit(b, trial=1)])["mcnemar_p"] is None


def test_paired_with_seeds_and_trials():
    rng = np.random.default_rng(4)
    base = [unit(draw(0.5, 60, rng), trial=t) for t in range(2)]  # one seed
    tuned = [unit(draw(p, 60, rng), seed=s, trial=t) for s, p in enumerate([0.6, 0.9]) for t in range(2)]
    p = paired.paired("exact_match", base, tuned, n_boot=500)
    assert p["n"] == 60 and p["mcnemar_p"] is None
    assert p["ci"][0] < p["diff"] < p["ci"][1]
    assert p == paired.paired("exact_match", base, tuned, n_boot=500)
    # seed variance widens the interval compared with the same data under one seed
    one = paired.paired("exact_match", base, [u for u in tuned if u["seed"] == 1], n_boot=500)
    assert p["ci"][1] - p["ci"][0] > one["ci"][1] - one["ci"][0]
    with pytest.raises(stats.PairingError):
        paired.paired("exact_match", base, [unit(draw(0.5, 60, rng), trial=7)])  # no common trial
    with pytest.raises(stats.PairingError):
        paired.paired("exact_match", base, [unit(draw(0.5, 50, rng), trial=t) for t in range(2)])  # other items


def test_paired_norm_avg_is_the_mean_difference():
    rng = np.random.default_rng(5)
    ta = {f"t{i}": ("exact_match", (), [unit(draw(0.5, 100, rng))]) for i in range(12)}
    tb = {f"t{i}": ("exact_match", (), [unit(draw(0.6, 100, rng))]) for i in range(12)}
    out = paired.paired_norm_avg(ta, tb)
    diffs = [paired.paired("exact_match", ta[k][2], tb[k][2])["diff"] for k in ta]
    assert out["diff"] == pytest.approx(np.mean(diffs))
    assert out["n_tasks"] == 12 and out["mcnemar_p"] is None
    assert out["ci"][0] < out["diff"] < out["ci"][1]
    # averaging 12 tasks narrows the interval compared with one task
    single = paired.paired("exact_match", ta["t0"][2], tb["t0"][2])
    assert out["ci"][1] - out["ci"][0] < single["ci"][1] - single["ci"][0]


def test_bootstrap_is_fast():
    import time

    rng = np.random.default_rng(6)
    ta = {f"t{i}": ("exact_match", (), [unit(draw(0.5, 100, rng))]) for i in range(12)}
    tb = {f"t{i}": ("exact_match", (), [unit(draw(0.6, 100, rng))]) for i in range(12)}
    t0 = time.perf_counter()
    paired.paired_norm_avg(ta, tb, n_boot=2000)
    for k in ta:
        paired.paired("exact_match", ta[k][2], tb[k][2], n_boot=2000)
    assert time.perf_counter() - t0 < 1.0


# ------------------------------------------------------------------ results, report, plot
def eval_result(rng, p_big, p_small, p_tuned, seeds=(0,)):
    res = {"shots": [4], "seed": 0, "tasks": {}, "norm_avg": {}, "format_rate": {"4": 1.0}}
    for name, p, n in (("big", p_big, 120), ("small", p_small, 20)):
        units = [unit(draw(p, n, rng), seed=s, tag=name) for s in seeds]
        res["tasks"][name] = {"metric": "exact_match", "match": [], "mode": "generate", "n": n, "prompt": False,
                              "scores": {"4": stats.summarize("exact_match", units)["score"]}, "format_rate": {"4": None},
                              "units": {"4": units}}
    res["norm_avg"]["4"] = float(np.mean([r["scores"]["4"] for r in res["tasks"].values()]))
    tu = [unit(draw(p_tuned, 80, rng), seed=s, tag="tuned") for s in seeds]
    res["tuned"] = {"name": "sst2", "metric": "exact_match", "match": [], "prompt": False, "n": 80,
                    "score": stats.summarize("exact_match", tu)["score"], "units": tu}
    return stats.attach_summaries(res)


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(7)
    methods = {"base": eval_result(rng, 0.3, 0.5, 0.4), "full": eval_result(rng, 0.9, 0.5, 0.9, seeds=(0, 1)),
               "promot": eval_result(rng, 0.35, 0.55, 0.85, seeds=(0, 1))}
    res = {"shots": [4], "tuned_task": "sst2", "methods": methods}
    res["paired"] = paired.compare_methods(res, n_boot=500)
    return res


def test_attach_summaries_fills_every_field(results):
    full = results["methods"]["full"]
    s = full["tasks"]["big"]["summary"]["4"]
    assert s["method"] == "hierarchical bootstrap" and s["n_units"] == 2 and s["n"] == 120
    assert full["tuned"]["summary"]["se"] > 0
    avg = full["norm_avg_summary"]["4"]
    assert avg["n_tasks"] == 2
    assert avg["score"] == pytest.approx(np.mean([full["tasks"][t]["summary"]["4"]["score"] for t in ("big", "small")]))
    assert results["methods"]["base"]["tasks"]["small"]["summary"]["4"]["method"] == "closed form"


def test_compare_methods_keys(results):
    per_k = results["paired"]["4"]
    assert list(per_k) == ["full vs base", "promot vs base", "promot vs full"]
    c = per_k["full vs base"]
    assert (c["a"], c["b"]) == ("base", "full")
    assert set(c["tasks"]) == {"big", "small"}
    assert c["tasks"]["big"]["significant"] and c["tasks"]["big"]["diff"] > 0
    assert c["tuned"]["diff"] > 0 and c["norm_avg"]["n_tasks"] == 2
    m = results["methods"]
    assert c["tuned"]["diff"] == pytest.approx(m["full"]["tuned"]["summary"]["score"] - m["base"]["tuned"]["summary"]["score"])


def test_markdown_report_shows_uncertainty(results):
    md = markdown_report(results, "T")
    table = comparison_table(results, 4)
    assert "±" in table
    assert "exact_match, n=120" in table and "| base | full (2 draws) | promot (2 draws) |" in table
    assert f"small {stats.WARN}" in table and f"big {stats.WARN}" not in table
    assert f"fewer than {stats.SMALL_N} items" in md
    diffs = paired_table(results, 4)
    assert "full − base" in diffs and "promot − full" in diffs
    big_row = next(line for line in diffs.splitlines() if line.startswith("| big"))
    assert "**+" in big_row and "* |" in big_row  # full - base on big is clearly significant
    small_row = next(line for line in diffs.splitlines() if line.startswith("| small"))
    assert stats.WARN in small_row
    assert "**Norm. Avg.**" in diffs
    assert "paired bootstrap" in md


def test_mcnemar_table_when_one_draw_per_side():
    rng = np.random.default_rng(8)
    res = {"shots": [4], "methods": {"base": eval_result(rng, 0.3, 0.5, 0.4), "full": eval_result(rng, 0.8, 0.5, 0.9)}}
    res["paired"] = paired.compare_methods(res, n_boot=300)
    diffs = paired_table(res, 4)
    assert "McNemar" in diffs
    p = res["paired"]["4"]["full vs base"]["tasks"]["big"]["mcnemar_p"]
    assert f"{p:.3g}" in diffs


def test_report_still_reads_old_results():
    old = {"shots": [4], "methods": {m: {"tasks": {"t": {"metric": "exact_match", "n": 50, "scores": {"4": v}}},
                                          "norm_avg": {"4": v}, "format_rate": {"4": None}, "tuned": None}
                                      for m, v in (("base", 40.0), ("full", 45.0))}}
    md = markdown_report(old)
    assert "| t | exact_match, n=50 | 40.00 | 45.00 |" in md
    assert "(+5.00)" in md


def test_plot_has_error_bars(results, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    paths = plot(results, tmp_path)
    assert [p.name for p in paths] == ["tradeoff.png", "tasks.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    trade, tasks = (f.axes[0] for f in figs)
    bars = [c for c in trade.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and all(c.has_xerr and c.has_yerr for c in bars)
    bars = [c for c in tasks.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and all(c.has_yerr for c in bars)
    segs = bars[1].lines[2][0].get_segments()  # full's error bars: non-zero length
    assert any(abs(s[1][1] - s[0][1]) > 0 for s in segs)
    for f in figs:
        close(f)


def test_many_comparisons_split_into_tables():
    rng = np.random.default_rng(9)
    res = {"shots": [4], "methods": {m: eval_result(rng, 0.5, 0.5, 0.5) for m in ("base", "a", "b", "c", "d")}}
    assert paired.comparisons(list(res["methods"]))[:4] == [("base", m) for m in "abcd"]
    res["paired"] = paired.compare_methods(res, n_boot=50)
    assert len(res["paired"]["4"]) == 4 + 6
    diffs = paired_table(res, 4)
    heads = [line for line in diffs.splitlines() if line.startswith("| task |")]
    assert len(heads) == 2 * 2  # two tables of differences (6 + 4 columns), each with its McNemar table
    assert heads[0].count("−") == 6 and heads[2].count("−") == 4
