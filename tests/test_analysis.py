"""The analyses (retain analyze format-curve / gradients, retain compare --sweep) on tiny random models."""

from __future__ import annotations

import json

import pytest

from conftest import cli, write_jsonl


def _suite(tmp_path, n: int = 12):
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(n)])
    write_jsonl(suite / "caps.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(n)])
    return suite


def test_compare_sweep_trains_every_value_of_every_method_and_draws_the_frontier(tmp_path, task):
    train, val = task
    out = tmp_path / "cmp"
    cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--suite", _suite(tmp_path),
        "--shots", "1", "--examples", "4", "--tuned-examples", "4", "--max-steps", "1", "--stage1-steps", "1",
        "--stage2-steps", "1", "--batch-size", "4", "--eval-every", "0", "--save-every", "0", "--output", out,
        "--methods", "base,full,promot", "--sweep", "lr+stage2_lr=1e-4,1e-2")
    res = json.loads((out / "results.json").read_text())
    names = ["full@lr+stage2_lr=1e-4", "full@lr+stage2_lr=1e-2", "promot@lr+stage2_lr=1e-4", "promot@lr+stage2_lr=1e-2"]
    assert list(res["methods"]) == ["base"] + names
    for name in names:  # one run per value per method, trained at that value
        info = json.loads((out / "runs" / name / "run.json").read_text())
        lr = float(name.rpartition("=")[2])
        assert info["config"]["lr"] == lr and info["config"]["stage2_lr"] == lr
        assert info["stages"][-1]["learning_rate"] == lr
    front = res["frontier"]
    assert front["fields"] == ["lr", "stage2_lr"] and list(front["methods"]) == ["full", "promot"]
    pts = front["methods"]["full"]["1"]
    assert [p["value"] for p in pts] == ["1e-4", "1e-2"]
    assert pts[0]["norm_avg"]["se"] is not None and pts[0]["vs_base"]["norm_avg"]["ci"] is not None
    md = (out / "frontier.md").read_text()
    assert "| full | 1e-2 |" in md and "| promot | 1e-4 |" in md and "Norm. Avg. − base [95%]" in md
    assert (out / "frontier.png").stat().st_size > 1000


@pytest.mark.parametrize("spec, message", [
    ("lr", "expected FIELD=V1,V2"),
    ("lrr=1e-5", "'lrr' is not a training option"),
    ("lr=fast", "option 'lr' must be float"),
    ("max_steps=1.5", "option 'max_steps' must be int"),
    ("max_steps=0,2", "must be positive"),
    ("scheduler=linear,a/b", "names a run folder"),
    ("method=full", "cannot be swept"),
    ("lr=1e-5,1e-5", "repeated"),
])
def test_a_bad_sweep_spec_is_refused(spec, message):
    from retain.errors import RetainError
    from retain.workflows.sweep import parse_sweep

    with pytest.raises(RetainError, match="--sweep") as e:
        parse_sweep(spec)
    assert message in str(e.value)


def test_sweep_spec_types_follow_the_training_options():
    from retain.workflows.sweep import parse_sweep, run_config, split

    s = parse_sweep("gradient_checkpointing=true,off")
    assert [split(n)[1] for n in s.names("full")] == [{"gradient_checkpointing": True}, {"gradient_checkpointing": False}]
    from retain.config import TrainConfig

    c = run_config(TrainConfig(), "promot-1shot@max-steps+stage2_steps=7")
    assert (c.method, c.one_shot, c.max_steps, c.stage2_steps) == ("promot", True, 7, 7)
    assert parse_sweep("max-steps+stage2_steps=3,7").names("base") == ["base"]


def test_a_bad_sweep_is_one_line_before_any_work(tmp_path, task):
    train, val = task
    p = cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--sweep", "lr=1e-5,x",
            "--output", tmp_path / "o", check=False)
    assert p.returncode == 2 and "--sweep: option 'lr' must be float, got 'x'" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
