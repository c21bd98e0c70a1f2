"""bench/cit.py's decisions without training: which methods it skips, reruns or resumes, and the verdicts of
"What holds at 95%" (the runs themselves: the continual tests; end to end: bench/cit.py with a tiny model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cit
import cit_report as rep


def _args(tmp_path, *extra):
    return cit.parse(["--model", "tiny-random-llama", "--tasks", "emdg", "simp", "--max-steps", "2",
                      "--runs", str(tmp_path / "runs"), *extra], cit.BUDGET)


def test_every_registry_method_in_readme_order(tmp_path):
    from retain.continual.methods import names

    args = _args(tmp_path)
    assert args.methods == list(names()) and args.tasks == ["simp", "emdg"]


def test_skip_rerun_resume(tmp_path):
    from retain.artifacts import staging_dir

    args = _args(tmp_path)
    out = tmp_path / "runs" / "replay"
    assert cit.plan("replay", args) == ([], "run")
    recorded = {**cit.settings(cit.continual_argv("replay", args)), "resume": True, "overwrite": False}
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"config": recorded}))
    assert cit.plan("replay", args)[0] is None  # finished, same options (--resume/--overwrite aside)
    extra, note = cit.plan("replay", _args(tmp_path, "--max-steps", "3"))
    assert extra == ["--overwrite"] and "max_steps" in note
    (out / "results.json").unlink()
    partial = staging_dir(out) / "checkpoints"
    partial.mkdir(parents=True)
    (partial / "settings.json").write_text(json.dumps(cit.settings(cit.continual_argv("replay", args))))
    assert cit.plan("replay", args)[0] == ["--resume"]
    extra, note = cit.plan("replay", _args(tmp_path, "--lr", "replay=1e-4"))
    assert extra == [] and "discarded" in note and "lr" in note


@pytest.mark.parametrize("rule, ci, verdict", [
    (rep.about_zero, [0.0, 0.0], rep.HOLDS), (rep.about_zero, [-1.5, 1.0], rep.HOLDS),
    (rep.about_zero, [-4.0, -2.5], rep.FAILS), (rep.about_zero, [-3.0, 0.5], rep.UNDECIDED),
    (rep.below_zero, [-3.0, -0.1], rep.HOLDS), (rep.below_zero, [-1.0, 1.0], rep.FAILS),
    (rep.below_zero, [-3.0, 0.5], rep.UNDECIDED), (rep.not_below, [-1.0, 3.0], rep.HOLDS),
    (rep.not_below, [-5.0, -2.5], rep.FAILS), (rep.not_below, [-3.0, 1.0], rep.UNDECIDED),
    (rep.about_zero, None, rep.UNDECIDED)])
def test_verdicts(rule, ci, verdict):
    assert rule(ci, 2.0) == verdict


def test_combined_verdict():
    assert rep.combine([rep.HOLDS, rep.HOLDS]) == rep.HOLDS
    assert rep.combine([rep.HOLDS, rep.UNDECIDED]) == rep.UNDECIDED
    assert rep.combine([rep.UNDECIDED, rep.FAILS]) == rep.FAILS
