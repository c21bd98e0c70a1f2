"""bench/promot_paper.py's mechanical decisions: the issue's goal and the recipe taken to the paper run, on
synthetic evaluations built as the harness builds them (per-item units, summaries), scored by the real paired
intervals. Its units' caching and resuming were checked by running it (see the script's docstring)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import promot_paper as pp

from retain.evaluation.stats import attach_summaries

N = 40


def _units(right: int) -> list[dict]:
    refs = [f"w{i}" for i in range(N)]
    return [{"seed": 0, "trial": 0, "inputs": refs, "references": refs,
             "predictions": [r if i < right else "True" for i, r in enumerate(refs)]}]


def _eval(suite_right: int, tuned_right: int, rate: float) -> dict:
    tasks = {t: {"metric": "exact_match", "match": [], "units": {"4": _units(suite_right)}} for t in ("a", "b")}
    ev = {"shots": [4], "tasks": tasks, "format_rate": {"4": rate}, "norm_avg": {"4": 100.0 * suite_right / N},
          "tuned": {"name": "rte", "metric": "exact_match", "match": [], "score": 100.0 * tuned_right / N,
                    "units": _units(tuned_right)}}
    return attach_summaries(ev)


def _results(**promots) -> dict:
    methods = {"base": _eval(30, 20, 0.0), "full@recipe=lr=0.0003,steps=300": _eval(10, 36, 40.0)}
    methods.update({f"promot@recipe={k}": v for k, v in promots.items()})
    results = pp.results_of(methods, "rte", [4])
    results["paired"] = pp.paired_vs_base(results)
    return results


@pytest.mark.parametrize("promot, holds", [
    (_eval(28, 36, 5.0), True),     # same RTE score, drop 5 of full's 50, format rate 5 of 40
    (_eval(28, 36, 20.0), False),   # format rate above a quarter of full FT's
    (_eval(20, 36, 5.0), False),    # drop 25: more than a third of 50
    (_eval(30, 20, 0.0), False),    # keeps everything but RTE is significantly worse than full FT's
])
def test_goal_rule(promot, holds):
    g = pp.goal(_results(centre=promot), "4")
    assert g["full_points_losing_10"] == ["full@recipe=lr=0.0003,steps=300"]
    assert g["holds"] is holds
    (row,) = g["pairs"]
    assert row["drop_full"] == pytest.approx(50.0)


def test_goal_premise_and_choice():
    weak = {"base": _eval(30, 20, 0.0), "full@recipe=lr=1e-05,steps=100": _eval(28, 30, 0.0),
            "promot@recipe=centre": _eval(30, 30, 0.0)}
    results = pp.results_of(weak, "rte", [4])
    results["paired"] = pp.paired_vs_base(results)
    g = pp.goal(results, "4")
    assert not g["full_points_losing_10"] and not g["holds"] and "premise" in pp.goal_text(g)
    # the choice: full FT's best RTE point; ProMoT's best Norm. Avg. among points not significantly below it on RTE
    c = pp.choose(_results(centre=_eval(20, 36, 5.0), **{"stage2_lr=3e-5": _eval(30, 20, 0.0), "1shot": _eval(26, 35, 5.0)}), "4")
    assert c["full"]["options"] == {"lr": 3e-4, "max_steps": 300}
    assert c["promot"]["name"] == "promot@recipe=1shot" and "one_shot" not in c["promot"]["options"]
