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


def test_format_curve_scores_every_method_at_the_requested_steps(tmp_path, task):
    train, val = task
    out = tmp_path / "curve"
    cli("analyze", "format-curve", "--model", "tiny-random-llama", "--train", train, "--validation", val,
        "--suite", _suite(tmp_path), "--shots", "1", "--examples", "4", "--tuned-examples", "4", "--max-steps", "4",
        "--stage1-steps", "2", "--stage2-steps", "4", "--every", "2", "--batch-size", "4", "--output", out)
    res = json.loads((out / "results.json").read_text())
    steps = {m: [(p["stage"], p["stage_step"], p["step"]) for p in pts] for m, pts in res["methods"].items()}
    assert steps["full"] == [("finetune", 0, 0), ("finetune", 2, 2), ("finetune", 4, 4)]
    # ProMoT's stage 1 before 0, stage 2 from 0 (its step 0 is stage 1's last step, scored once)
    assert steps["promot"] == [("stage1", 0, -2), ("stage1", 2, 0), ("stage2", 2, 2), ("stage2", 4, 4)]
    for pts in res["methods"].values():
        for p in pts:
            ev = json.loads((out / "evals" / ("full" if p["stage"] == "finetune" else "promot") /
                             f"{p['stage']}-{p['stage_step']}.json").read_text())
            assert p["format_rate"]["1"]["rate"] == ev["format_rate"]["1"]  # the harness's own pooled rate
            assert p["format_rate"]["1"]["n"] == 8 and p["format_rate"]["1"]["se"] is not None
            assert p["norm_avg"]["1"]["se"] is not None and p["tuned"]["n"] == 4
    # the suite is scored without the soft prompt: in stage 1 (model frozen) it answers as the untrained model
    answers = lambda d, f: json.loads((out / "evals" / d / f).read_text())["tasks"]["copy"]["units"]["1"][0]["predictions"]
    assert answers("promot", "stage1-0.json") == answers("promot", "stage1-2.json") == answers("full", "finetune-0.json")
    assert json.loads((out / "evals" / "promot" / "stage1-2.json").read_text())["tuned"]["prompt"] is True
    md = (out / "results.md").read_text()
    assert "| promot | -2 | stage1 (0) |" in md and "format rate (%) ± SE" in md
    assert (out / "format_curve.png").stat().st_size > 1000 and (out / "manifest.json").is_file()
    assert not (out / "runs").exists()


def test_gradient_analysis_measures_stages_that_train_the_model(tmp_path, task):
    train, _ = task
    out = tmp_path / "grads"
    cli("analyze", "gradients", "--model", "tiny-random-llama", "--train", train, "--max-steps", "2", "--stage1-steps", "1",
        "--stage2-steps", "2", "--every", "1", "--probe-batches", "2", "--batch-size", "4", "--output", out)
    res = json.loads((out / "results.json").read_text())
    assert [(p["stage"], p["step"]) for p in res["methods"]["full"]] == [("finetune", 0), ("finetune", 1), ("finetune", 2)]
    assert [(p["stage"], p["step"]) for p in res["methods"]["promot"]] == [("stage2", 0), ("stage2", 1), ("stage2", 2)]
    for pts in res["methods"].values():
        for p in pts:
            for g in ("q", "k", "v", "mlp", "block", "overall"):
                c = p["cosine"][g]
                assert -1.0 <= c["cosine"] <= 1.0 + 1e-9 and c["n"] == 2 and c["se"] is not None
    assert res["modules"]["full"]["q"] == ["model.layers.1.self_attn.q_proj"]
    assert [b["examples"] for b in res["probe_batches"]["full"]] == [4, 4]
    assert all(0 <= b["outputs_changed"] <= 4 for b in res["probe_batches"]["promot"])
    assert "| promot | 0 | stage2 (0) |" in (out / "results.md").read_text()
    assert (out / "gradients.png").stat().st_size > 1000


def _trainer(spec, tmp_path):
    """A StageTrainer over a tiny model as run_stage builds one (arguments, collator, loss), every weight trained."""
    from retain.config import TrainConfig
    from retain.data import TaskFormat
    from retain.engine.packing import collator
    from retain.engine.stage import packing_layout, training_arguments
    from retain.engine.trainer import StageTrainer
    from retain.models import load_model

    loaded = load_model(spec)
    model, causal = loaded.model, not loaded.is_seq2seq
    model.requires_grad_(True)
    cfg = TrainConfig(model=spec)
    layout = packing_layout(model, cfg, causal=causal, virtual=0)
    trainer = StageTrainer(model=model, args=training_arguments(cfg, tmp_path, 1, 1e-3, False), train_dataset=[{}],
                           data_collator=collator(loaded.tokenizer, layout is not None), selective_loss=causal)
    return trainer, loaded.tokenizer, TaskFormat("{input}", None, loaded.is_seq2seq)


@pytest.mark.parametrize("spec, q, mlp", [
    ("tiny-random-llama", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp"),
    ("tiny-random-gpt2", "transformer.h.1.attn.c_attn[q]", "transformer.h.1.mlp"),
    ("tiny-random-t5", "decoder.block.1.layer.0.SelfAttention.q", "decoder.block.1.layer.2.DenseReluDense"),
])
def test_last_block_modules_resolve_per_family_and_identity_shuffle_gives_cosine_one(tmp_path, spec, q, mlp):
    import numpy as np

    from conftest import sentiment_rows
    from retain.analysis.gradients import GROUPS, cosine, gradient, module_groups, shuffled
    from retain.data import tokenize

    trainer, tok, fmt = _trainer(spec, tmp_path)
    groups = module_groups(trainer.model)
    assert groups["q"][0] == [q] and groups["mlp"][0] == [mlp]
    assert {"k", "v", "block"} <= set(groups) and groups["k"][0] != groups["q"][0]
    if spec == "tiny-random-gpt2":  # Q, K and V partition the fused c_attn
        w = dict(trainer.model.named_parameters())["transformer.h.1.attn.c_attn.weight"]
        assert sum(length for g in "qkv" for p, (_, _, length) in groups[g][1] if p is w) == w.shape[1]
    pool = sentiment_rows(40)
    rows = [r for r in pool if r["output"] == "positive"][:3] + [r for r in pool if r["output"] == "negative"][:3]
    real = tokenize(rows, tok, fmt, 64).rows
    a = gradient(trainer, real)
    same = gradient(trainer, tokenize(shuffled(rows, np.arange(len(rows))), tok, fmt, 64).rows)
    every = [(p, None) for p in trainer.model.parameters() if p.requires_grad]
    for g in GROUPS:
        assert cosine(a, same, every if g == "overall" else groups[g][1]) == pytest.approx(1.0, abs=1e-9)
    swapped = gradient(trainer, tokenize(shuffled(rows, [3, 4, 5, 0, 1, 2]), tok, fmt, 64).rows)  # labels flipped
    assert cosine(a, swapped, every) < 1.0 - 1e-6
    assert all(p.grad is None for p in trainer.model.parameters())  # the measurement leaves .grad alone


def test_format_rate_of_a_point_is_the_pooled_share_with_its_standard_error():
    from scipy.stats import sem

    from retain.analysis.curve import format_rate, stage_offsets
    from retain.evaluation.harness import output_space

    space = output_space([{"input": "a", "output": "positive"}, {"input": "b", "output": "negative"}])
    unit = lambda p, r: {"predictions": p, "references": r}
    result = {"tasks": {
        "gen": {"mode": "generate", "units": {"1": [unit(["positive x", "w", "negative", "v"], ["a", "b", "c", "d"])]}},
        "ref": {"mode": "generate", "units": {"1": [unit(["positive", "z"], ["positive", "e"])]}},  # first item not counted
        "ll": {"mode": "loglik", "units": {"1": [unit(["positive"], ["f"])]}},  # log-likelihood: never counted
    }}
    got = format_rate(result, "1", space)
    assert got["n"] == 5 and got["rate"] == pytest.approx(40.0)
    assert got["se"] == pytest.approx(float(sem([100, 0, 100, 0, 0])))
    assert stage_offsets([5, 3]) == [-5, 0] and stage_offsets([4]) == [0] and stage_offsets([2, 3, 4]) == [-5, -3, 0]


@pytest.mark.parametrize("argv, needle", [
    (["format-curve", "--methods", "full,fancy"], "--methods: unknown method 'fancy'"),
    (["format-curve", "--tasks", "copy,nope"], "--tasks: no task 'nope' in the suite"),
    (["format-curve", "--every", "0"], "--every must be positive"),
    (["format-curve", "--validation", None], "--validation is required"),
    (["gradients", "--train", "ONE"], "shuffling labels needs at least 2"),
    (["gradients", "--probe-batches", "-1"], "--probe-batches must be positive"),
    (["gradients", "--methods", "full,prompt"], "--methods: prompt trains no model weights"),
])
def test_analyze_bad_input_is_one_line_and_writes_nothing(tmp_path, task, capsys, argv, needle):
    from retain.cli import main

    train, val = task
    one = write_jsonl(tmp_path / "one.jsonl", [{"input": "a", "output": "b"}])
    args = {"--model": "tiny-random-llama", "--train": train, "--validation": val, "--suite": _suite(tmp_path),
            "--output": tmp_path / "out"}
    if argv[0] == "gradients":
        args.pop("--validation")
        args.pop("--suite")
    flags = argv[1:]
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = {"ONE": one}.get(value, value)
    cmd = ["analyze", argv[0]] + [str(x) for k, v in args.items() if v is not None for x in (k, v)]
    with pytest.raises(SystemExit) as e:
        main(cmd)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
