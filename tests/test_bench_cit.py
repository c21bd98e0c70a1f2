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


def test_every_registry_method_deciding_three_first(tmp_path):
    from retain.continual.methods import names

    args = _args(tmp_path)
    from retain.continual.methods import get

    assert args.methods[:3] == ["switchcit", "sequential", "multitask"] and sorted(args.methods) == sorted(names())
    rest = [m for m in names() if m not in cit.FIRST]  # in registry order, those reusing a registry's adapters last
    assert [m for m in args.methods if m not in cit.FIRST] == [m for m in rest if not get(m).adapters_from] + ["arrow"]
    assert args.tasks == ["simp", "emdg"]
    assert cit.parse(["--methods", "replay", "multitask"], cit.BUDGET).methods == ["multitask", "replay"]


def test_jobs_skip_finished_and_order(tmp_path):
    args = _args(tmp_path, "--methods", "replay", "sequential", "switchcit")
    out = tmp_path / "runs" / "sequential"
    out.mkdir(parents=True)
    recorded = {**cit.settings(cit.continual_argv("sequential", args)), "resume": False, "overwrite": False}
    (out / "results.json").write_text(json.dumps({"config": recorded}))
    jobs = cit.jobs_of(args)
    assert [j.name for j in jobs] == ["switchcit", "replay"]  # sequential finished with the same options
    assert jobs[0].argv()[-2:] == ["--seed", "0"] and "--method" in jobs[0].argv() and not jobs[0].needs  # nothing to reuse


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


def _finished(args, method, **config):
    out = Path(args.runs) / method
    out.mkdir(parents=True, exist_ok=True)
    recorded = {**cit.settings(cit.continual_argv(method, args)), "resume": False, "overwrite": False, **config}
    (out / "results.json").write_text(json.dumps({"config": recorded, "base_evaluation": {"key": {}, "from": None}}))
    if cit._method(method).registry:
        (out / "registry.json").write_text("{}")  # a registry on disk (only its presence matters to reuse_flags)


def test_reuse_flags_point_at_current_runs_and_change_no_decision(tmp_path):
    args = _args(tmp_path, "--methods", "arrow", "sequential", "switchcit")
    rel = lambda *p: cit._rel(tmp_path.joinpath("runs", *p))
    assert args.methods == ["switchcit", "sequential", "arrow"]
    assert cit.reuse_flags("arrow", args) == [] and cit.reuse_flags("sequential", args) == []  # nothing finished
    jobs = cit.jobs_of(args)
    assert [j.needs for j in jobs] == [(), (), ("switchcit",)]  # arrow waits for the registry
    # switchcit finished (itself having taken the base scores of some other run): skipped, and lends both
    _finished(args, "switchcit", base_scores="elsewhere/results.json")
    assert cit.plan("switchcit", args)[0] is None
    assert cit.reuse_flags("arrow", args) == ["--adapters-from", rel("switchcit"), "--base-scores", rel("switchcit", "results.json")]
    assert cit.reuse_flags("sequential", args) == ["--base-scores", rel("switchcit", "results.json")]
    assert cit.reuse_flags("switchcit", args) == []  # never its own
    assert cit.reuse_flags("arrow", _args(tmp_path, "--methods", "arrow", "--no-reuse")) == []
    arrow = next(j for j in cit.jobs_of(args) if j.name == "arrow")
    assert arrow.argv()[-4:] == ["--adapters-from", rel("switchcit"), "--base-scores", rel("switchcit", "results.json")]
    # a finished method whose reuse flags pointed at other runs is not "changed"; nor is an interrupted one
    _finished(args, "arrow", adapters_from="x/switchcit", base_scores="x/results.json")
    assert cit.plan("arrow", args)[0] is None and "arrow" not in cit.stale(args)
    argv = cit.continual_argv("sequential", args)
    assert cit.settings(argv + ["--base-scores", "a.json", "--adapters-from", "b"]) == cit.settings(argv)
    # a lender finished with other options lends nothing; neither do adapters trained with another learning rate
    assert cit.reuse_flags("arrow", _args(tmp_path, "--max-steps", "3")) == []
    lr = _args(tmp_path, "--lr", "switchcit=1e-3")
    _finished(lr, "switchcit")
    (tmp_path / "runs" / "arrow" / "results.json").unlink()
    assert cit.reuse_flags("arrow", lr) == ["--base-scores", rel("switchcit", "results.json")]
    (tmp_path / "runs" / "switchcit" / "results.json").write_text(json.dumps({"config": json.loads(
        (tmp_path / "runs" / "switchcit" / "results.json").read_text())["config"]}))  # written before base keys
    assert cit.reuse_flags("sequential", lr) == []


def test_committed_results_count_as_finished_in_a_fresh_checkout(tmp_path):
    """A fresh checkout has docs/results/cit/<method>/ but no runs/cit: ``restore`` copies the committed files back,
    so the method is skipped (same options) or rerun (other options) and lends its base scores, never adapters it
    does not have on disk; results already in runs/ are left alone."""
    docs = tmp_path / "docs"
    args = _args(tmp_path, "--methods", "arrow", "sequential", "switchcit", "--docs", str(docs))
    for method in ("switchcit", "sequential"):
        _finished(args, method)
        (Path(args.runs) / method / "registry.json").unlink(missing_ok=True)
        for f in cit.RESULT_FILES[1:]:
            (Path(args.runs) / method / f).write_text(f"{method} {f}")
        committed = docs / "cit" / method
        committed.mkdir(parents=True)
        for f in cit.RESULT_FILES:
            (committed / f).write_bytes((Path(args.runs) / method / f).read_bytes())
    (docs / "cit" / "replay").mkdir()
    (docs / "cit" / "replay" / "results.md").write_text("incomplete: no results.json")
    import shutil

    shutil.rmtree(args.runs)
    assert [j.name for j in cit.jobs_of(args)] == ["switchcit", "sequential", "arrow"]  # nothing restored yet
    assert cit.restore(args) == ["switchcit", "sequential"]  # documented order; replay's files are incomplete
    for method in ("switchcit", "sequential"):
        for f in cit.RESULT_FILES:
            assert (Path(args.runs) / method / f).read_bytes() == (docs / "cit" / method / f).read_bytes()
    assert not (Path(args.runs) / "replay").exists()
    assert [j.name for j in cit.jobs_of(args)] == ["arrow"]  # both skipped: finished with the same options
    rel = cit._rel(Path(args.runs) / "switchcit" / "results.json")
    assert cit.reuse_flags("arrow", args) == ["--base-scores", rel]  # no registry on disk: arrow trains its own
    assert cit.restore(args) == []  # runs/ wins once it has them
    other = _args(tmp_path, "--methods", "sequential", "--max-steps", "3", "--docs", str(docs))
    assert cit.plan("sequential", other) == (["--overwrite"], "finished with other options (max_steps): rerun")


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


# ------------------------------------------------------------------ _common.run_jobs (both benchmarks' --jobs)
# A unit here is a small Python process: it counts to STEPS, one step per 0.05 s, keeping its count in a file (its
# "checkpoint") and continuing from it when started again; SIGINT makes it save and exit 130, as a training does.
UNIT = """
import os, signal, sys, time
name, steps, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = os.path.join(d, name + ".count")
n = int(open(state).read()) if os.path.exists(state) else 0
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
open(os.path.join(d, name + ".times"), "a").write(f"start {time.time()} {os.environ['OMP_NUM_THREADS']}\\n")
print(name, "from", n, flush=True)
while n < steps and not stop:
    time.sleep(0.05)
    n += 1
    open(state, "w").write(str(n))
open(os.path.join(d, name + ".times"), "a").write(f"end {time.time()}\\n")
sys.exit(130 if stop else 0)
"""


def _jobs(d: Path, steps: dict, needs: dict | None = None):
    from _common import Job

    return [Job(n, [sys.executable, "-c", UNIT, n, str(s), str(d)], needs=(needs or {}).get(n, ())) for n, s in steps.items()]


def _times(d: Path, name: str) -> list[list[str]]:
    return [line.split() for line in (d / f"{name}.times").read_text().splitlines()]


def test_jobs_run_at_once_with_threads_split_and_dependencies(tmp_path):
    import os

    from _common import run_jobs

    lines = []
    rc = run_jobs(_jobs(tmp_path, {"a": 8, "b": 8, "c": 1}, {"c": ("a", "missing")}), 2, tmp_path / "logs", log=lines.append)
    assert rc == 0
    (sa, ea), (sb, eb), (sc, _) = (_times(tmp_path, n) for n in "abc")
    assert float(sb[1]) < float(ea[1]) and float(sa[1]) < float(eb[1])  # a and b overlapped
    assert float(sc[1]) >= float(ea[1])  # c needs a (a need outside the jobs counts as met)
    assert sa[2] == str(max(1, (os.cpu_count() or 1) // 2))  # OMP_NUM_THREADS = cpus // jobs
    assert (tmp_path / "logs" / "b.log").read_text().splitlines()[-1] == "b from 0"
    assert sum("started" in x for x in lines) == 3 and sum("finished" in x for x in lines) == 3
    failing = _jobs(tmp_path, {"d": 1, "e": 1}, {"e": ("d",)})
    failing[0].argv = [sys.executable, "-c", "raise SystemExit(3)"]
    assert run_jobs(failing, 2, tmp_path / "logs", log=lines.append) == 3
    assert not (tmp_path / "e.times").exists() and "e: not started (d failed)" in lines[-1]


def test_a_job_reads_its_command_when_it_starts(tmp_path):
    """A Job's argv may be a function, called when the job starts: after the jobs it needs have finished."""
    from _common import Job, run_jobs

    first = _jobs(tmp_path, {"a": 3})[0]
    steps = lambda: str(int((tmp_path / "a.count").read_text()) + 2)
    later = Job("b", lambda: [sys.executable, "-c", UNIT, "b", steps(), str(tmp_path)], needs=("a",))
    assert run_jobs([first, later], 2, tmp_path / "logs", log=lambda m: None) == 0
    assert (tmp_path / "b.count").read_text() == "5"


PARENT = """
import sys
sys.path.insert(0, sys.argv[1])
from _common import Job, run_jobs
unit, d = sys.argv[2], sys.argv[3]
jobs = [Job(n, [sys.executable, "-c", unit, n, "40", d]) for n in ("a", "b", "c")]
sys.exit(run_jobs(jobs, 2, d + "/logs", on_finish=lambda n, s: print("finish", n, s, flush=True)))
"""


def test_interrupted_parallel_run_stops_children_and_resumes(tmp_path):
    import signal
    import subprocess
    import time

    bench = str(Path(cit.__file__).parent)
    cmd = [sys.executable, "-c", PARENT, bench, UNIT, str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while not all((tmp_path / f"{n}.count").exists() for n in "ab") and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "finish a 130" in out and "finish b 130" in out and not (tmp_path / "c.times").exists()  # c never started
    kept = {n: int((tmp_path / f"{n}.count").read_text()) for n in "ab"}
    assert all(0 < k < 40 for k in kept.values())  # each stopped mid-way, its state written
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for n in "ab":  # the rerun continued each from where it stopped
        assert f"{n} from {kept[n]}" in (tmp_path / "logs" / f"{n}.log").read_text()
        assert (tmp_path / f"{n}.count").read_text() == "40"
    assert (tmp_path / "c.count").read_text() == "40"


@pytest.mark.slow
def test_end_to_end_arrow_takes_switchcits_adapters_and_base_scores(tmp_path):
    """bench/cit.py on a tiny model, two CIT tasks: arrow starts after switchcit with both reuse flags, trains nothing,
    and a rerun of the same command skips both."""
    import subprocess

    if not (cit.DATA / "simp" / "train.jsonl").is_file():
        pytest.skip(f"no CIT data under {cit.DATA}")
    argv = ["--model", "tiny-random-llama", "--methods", "arrow", "switchcit", "--tasks", "simp", "emdg", "--max-steps", "2",
            "--eval-samples", "2", "--general-suite", "none", "--save-every", "0", "--option", "eval_every=0",
            "max_new_tokens=4", "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"), "--jobs", "2"]
    proc = subprocess.run([sys.executable, str(Path(cit.__file__)), *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = tmp_path / "runs"
    command = (runs / "logs" / "arrow.log").read_text().splitlines()[0]
    assert f"--adapters-from {cit._rel(runs / 'switchcit')} --base-scores {cit._rel(runs / 'switchcit' / 'results.json')}" in command
    res = json.loads((runs / "arrow" / "results.json").read_text())
    assert res["training"] == [] and res["adapters_from"]["registry"] == cit._rel(runs / "switchcit")
    assert res["base_evaluation"]["from"] == cit._rel(runs / "switchcit" / "results.json") and len(res["R"]) == 2
    assert cit.jobs_of(cit.parse(argv, cit.BUDGET)) == []  # both finished with the same options: nothing to run
    import shutil

    shutil.rmtree(runs)  # a fresh checkout: the documents' copies count as finished
    args = cit.parse(argv, cit.BUDGET)
    assert cit.restore(args) == ["switchcit", "arrow"] and cit.jobs_of(args) == []


def test_summary_table_rows_have_the_headers_columns():
    from bench.cit_report import summary_table

    rows = [line for line in summary_table({}, ["switchcit", "sequential"]) if line.startswith("|")]
    assert len(rows) == 4 and {row.count("|") for row in rows} == {rows[0].count("|")}  # header, rule, 2 methods
