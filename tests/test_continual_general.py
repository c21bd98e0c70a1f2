"""The switch's general class (general inputs -> the base model) and general ability after every stage, on tiny models."""

import json
import shutil

import pytest
from tests import test_continual
from tests.conftest import cli, write_jsonl
from tests.test_continual import FAST, prompts_of

data, registry = test_continual.data, test_continual.registry  # its module fixtures, built again for this module


def general_inputs(reg, n=40):
    """Held-out general instructions of the registry's pool: the switch never saw them."""
    from retain.continual.general import held_out

    return held_out(reg.general["source"], reg.switch.stored[None], n, 0)


def test_general_input_goes_to_the_base_and_answers_as_the_base(registry):
    from retain.continual.generation import generate_routed
    from retain.continual.registry import load_registry
    from retain.evaluation.decoding import generate_texts
    from retain.models import load_model

    reg = load_registry(registry)
    assert reg.general == {"source": "builtin", "stored": 40} and reg.switch.labels == ["rev", "up", None]
    texts = general_inputs(reg)
    assert len(texts) == 40 and not set(texts) & set(reg.switch.stored[None])
    routed = reg.route(texts)
    res = json.loads((registry / "results.json").read_text())
    routing = res["routing"][-1]
    assert routing["n_general"] == 40 and routing["general_accuracy"] == 100.0 * routed.count(None) / 40
    assert routing["general_accuracy"] >= 80 and routing["accuracy"] == 100.0  # known tasks reported apart
    assert routing["rows"] == ["rev", "up", "general"] and routing["confusion"][2] == [routed.count(x) for x in ("rev", "up", None)]

    general = [t for t, r in zip(texts, routed) if r is None][:4]
    kw = dict(is_seq2seq=False, max_new_tokens=8, min_new_tokens=8, first_line=False)
    deployed = generate_routed(reg.model, reg.tokenizer, general, [None] * len(general), **kw)
    base = load_model("tiny-random-llama")
    assert deployed == generate_texts(base.model, base.tokenizer, general, **kw)  # the base model's own answers
    assert deployed != generate_routed(reg.model, reg.tokenizer, general, ["rev"] * len(general), **kw), \
        "the adapter answers as the base: the comparison would prove nothing"
    names, outs = reg.generate(general, max_new_tokens=8, first_line=False)
    assert names == [None] * len(general) and outs == generate_texts(base.model, base.tokenizer, general, is_seq2seq=False, max_new_tokens=8,
                                                                     first_line=False)


def test_general_suite_scored_through_the_switch(registry):
    """results.json: the deployed system on the general suite; an item routed to the base answers as the base did."""
    from retain.evaluation import paired

    res = json.loads((registry / "results.json").read_text())
    g = res["general"]
    assert g["suite"] == "builtin" and [s["stage"] for s in g["stages"]] == ["rev", "up"] and len(g["evals"]) == 2
    base, last = g["base"]["tasks"], g["evals"][-1]["tasks"]
    routed_base = same = 0
    for name, rec in last.items():
        unit, base_unit = rec["units"]["4"][0], base[name]["units"]["4"][0]
        assert len(unit["routes"]) == len(unit["predictions"]) == 2 and unit["inputs"] == base_unit["inputs"]
        for route, p, q in zip(unit["routes"], unit["predictions"], base_unit["predictions"]):
            if route is None:
                routed_base += 1
                same += p == q
    assert routed_base and same == routed_base
    assert g["stages"][-1]["routed_to_base"] == pytest.approx(100.0 * routed_base / 24, abs=0.01)
    rec = g["stages"][-1]
    d = rec["delta"]
    assert set(d) >= {"diff", "ci", "significant", "n"} and d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert rec["norm_avg"] - g["base"]["norm_avg_summary"]["4"]["score"] == pytest.approx(d["diff"], abs=1e-9)
    args = lambda ev: {n: (r["metric"], tuple(r["match"]), r["units"]["4"]) for n, r in ev["tasks"].items()}
    assert paired.paired_norm_avg(args(g["base"]), args(g["evals"][-1]))["ci"] == d["ci"]  # recomputable from the units
    md = (registry / "results.md").read_text()
    assert "General ability" in md and "held-out general inputs sent to the base model" in md


def test_generate_json_names_the_adapter(registry, data):
    from retain.continual.registry import load_registry

    reg = load_registry(registry)
    texts = general_inputs(reg)
    general = [t for t, r in zip(texts, reg.route(texts)) if r is None][:1]
    tasks, _ = prompts_of(data, ["up", "rev"], n=1)
    inputs = tasks + general
    del reg
    rows = [json.loads(line) for line in cli("generate", "--registry", registry, "--json", *inputs).stdout.splitlines()]
    names, outs = load_registry(registry).generate(inputs)
    assert [r["input"] for r in rows] == inputs and [r["output"] for r in rows] == outs
    assert [r["adapter"] for r in rows] == names == ["up", "rev", None]
    shown = cli("generate", "--registry", registry, "--show-task", *inputs).stdout.splitlines()
    assert [s.split("\t")[0] for s in shown] == ["up", "rev", "base"]


def _old_registry(src, dest):
    """The registry as written before the general class existed: a switch over the tasks only, no 'general' keys."""
    from retain.artifacts import write_manifest
    from retain.continual.registry import load_registry
    from retain.continual.switch import Switch

    shutil.copytree(src, dest)
    reg = load_registry(dest)
    old = Switch(reg.switch.tasks, {n: reg.switch.stored[n] for n in reg.switch.tasks}, info={"feature_model": "base"})
    old.fit(reg.features, epochs=30, lr=1e-2)
    old.save(dest / "switch")
    for f, drop in ((dest / "switch" / "switch.json", ("general", "stored_general")), (dest / "registry.json", ("general",))):
        info = json.loads(f.read_text())
        f.write_text(json.dumps({k: v for k, v in info.items() if k not in drop}))
    res = json.loads((dest / "results.json").read_text())
    (dest / "results.json").write_text(json.dumps({k: v for k, v in res.items() if k not in ("general", "transfer")}))
    write_manifest(dest)


def test_registry_from_before_the_general_class_loads_and_resumes(registry, data, tmp_path):
    from retain.continual.registry import load_registry

    old = tmp_path / "old"
    _old_registry(registry, old)
    reg = load_registry(old)
    assert reg.general is None and reg.switch.labels == ["rev", "up"]
    texts, truth = prompts_of(data, ["rev", "up"])
    assert reg.route(texts) == truth
    assert None not in reg.route(general_inputs(load_registry(registry)))  # without a general class: always a task
    del reg
    cli("continual", "--resume-from", old, "--tasks", data["dbl"], *FAST)  # adds the task and, by default, the general class
    reg = load_registry(old)
    assert reg.general["source"] == "builtin" and reg.switch.labels == ["rev", "up", "dbl", None]
    all_texts, all_truth = prompts_of(data, ["rev", "up", "dbl"])
    assert reg.route(all_texts) == all_truth
    res = json.loads((old / "results.json").read_text())
    assert [s["stage"] for s in res["general"]["stages"]] == ["dbl"] and res["routing"][-1]["general_accuracy"] is not None


def test_resume_keeps_the_general_class(registry, data, tmp_path):
    from retain.continual.registry import load_registry

    reg_dir = tmp_path / "cit"
    shutil.copytree(registry, reg_dir)
    stored = load_registry(reg_dir).switch.stored[None]
    cli("continual", "--resume-from", reg_dir, "--tasks", data["dbl"], *FAST, "--general-data", "none")
    reg = load_registry(reg_dir)
    assert reg.general == {"source": "builtin", "stored": 40} and reg.switch.stored[None] == stored  # the registry's own
    res = json.loads((reg_dir / "results.json").read_text())
    assert [s["stage"] for s in res["general"]["stages"]] == ["rev", "up", "dbl"]


def test_general_data_file_and_bad_inputs(data, tmp_path):
    good = write_jsonl(tmp_path / "general.jsonl", [{"input": f"Tell me something about the number {i}."} for i in range(30)])
    out = tmp_path / "own"
    cli("continual", "--model", "tiny-random-llama", "--tasks", data["rev"], "--output", out, *FAST,
        "--general-data", good, "--general-size", 20, "--general-suite", "none")
    info = json.loads((out / "registry.json").read_text())
    assert info["general"] == {"source": str(good), "stored": 20}
    res = json.loads((out / "results.json").read_text())
    assert res["routing"][-1]["n_general"] == 10 and res["general"] is None  # the 10 not stored are held out; no suite

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"input": "fine"}, {"text": "no input field"}])
    for flag, value, message in (("--general-data", bad, "bad.jsonl:2: field 'input' is missing"),
                                 ("--general-data", tmp_path / "missing.jsonl", "--general-data: file not found"),
                                 ("--general-suite", tmp_path / "missing", "--general-suite: no such file or folder")):
        proc = cli("continual", "--model", "tiny-random-llama", "--tasks", data["rev"], "--output", tmp_path / "x", flag, value,
                   check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_baseline_general_delta_and_continual_figures(data, tmp_path):
    """A baseline's general ability changes as it trains; Last, Avg, BWT, FWT, forgetting with their intervals."""
    from retain.continual.config import ContinualConfig
    from retain.workflows.continual import run_continual

    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "echo.jsonl", [{"input": f"{w} {i}", "output": f"{w[::-1]} {i}"}
                                       for i, w in enumerate(test_continual.WORDS * 2)])
    (suite / "suite.yaml").write_text("tasks:\n  - {name: echo, data: echo.jsonl, metric: chrf}\n")  # partial credit
    out = tmp_path / "seq"
    cfg = ContinualConfig(model="tiny-random-llama", method="sequential", output=str(out), max_steps=4, batch_size=4, lr=1e-2,
                          eval_samples=4, max_new_tokens=6, general_suite=str(suite / "suite.yaml"), general_examples=10, general_shots=1)
    run_continual(cfg, [str(data["rev"]), str(data["up"]), str(data["dbl"])], progress=lambda m: None)
    res = json.loads((out / "results.json").read_text())
    g = res["general"]
    base, stages = g["base"]["norm_avg_summary"]["1"]["score"], g["stages"]
    assert [s["stage"] for s in stages] == ["rev", "up", "dbl"] and all(s["routed_to_base"] is None for s in stages)
    assert any(s["delta"]["diff"] != 0 for s in stages), "full fine-tuning at lr 1e-2 left the general suite unchanged"
    for s in stages:
        assert s["norm_avg"] - base == pytest.approx(s["delta"]["diff"]) and s["delta"]["ci"][0] <= s["delta"]["diff"] <= s["delta"]["ci"][1]
        assert s["tasks"]["echo"]["n"] == 10 and s["tasks"]["echo"]["delta"]["n"] == 10

    R, s = res["R"], res["summary"]
    assert R[0][1] is None and R[1][2] is None  # the next task is scored (FWT) but is not part of R
    before, b = res["transfer"]["before"], res["transfer"]["base"]
    assert before[0] is None and before[1]["score"] == res["details"][0]["up"]["score"] and b[2]["n"] == 4
    assert s["fwt"] == pytest.approx(((before[1]["score"] - b[1]["score"]) + (before[2]["score"] - b[2]["score"])) / 2, abs=1e-3)
    assert s["last"] == s["final_average"] == pytest.approx(sum(R[2]) / 3, abs=1e-3)
    assert s["avg"] == pytest.approx((R[0][0] + (R[1][0] + R[1][1]) / 2 + sum(R[2]) / 3) / 3, abs=1e-3)
    assert s["last_se"] == pytest.approx(sum(e * e for e in res["R_se"][2]) ** 0.5 / 3, abs=1e-3)
    for key in ("bwt", "fwt"):
        assert s[key + "_ci"][0] <= s[key] + 1e-6 and s[key] - 1e-6 <= s[key + "_ci"][1]
    assert s["forgetting"] is not None
    md = (out / "results.md").read_text()
    for word in ("Last", "Avg", "BWT", "FWT", "forgetting", "change from the base"):
        assert word in md


def test_summary_figures_with_intervals():
    from retain.continual.measure import summarize

    units = lambda scores: [{"seed": 0, "trial": 0, "items": list(range(len(scores))),
                             "predictions": ["a" if x else "b" for x in scores], "references": ["a"] * len(scores)}]
    R = [[50.0, None], [25.0, 75.0]]
    per = {(0, 0): [1, 0, 1, 0], (1, 0): [1, 0, 0, 0], (1, 1): [1, 1, 1, 0]}
    transfer = {"base": [None, {"score": 25.0, "units": units([0, 1, 0, 0])}],
                "before": [None, {"score": 50.0, "units": units([1, 1, 0, 0])}]}
    s = summarize(R, [[25.0, None], [25.0, 25.0]], metrics=["exact_match"] * 2, units=lambda i, j: units(per[i, j]),
                  transfer=transfer)
    assert s["last"] == 50.0 and s["avg"] == 50.0 and s["bwt"] == -25.0 and s["forgetting"] == 25.0 and s["fwt"] == 25.0
    assert s["last_se"] == pytest.approx((25 ** 2 * 2) ** 0.5 / 2, abs=1e-4)  # rounded to 4 decimals
    assert s["bwt_ci"][0] <= -25.0 <= s["bwt_ci"][1] and s["fwt_ci"][0] <= 25.0 <= s["fwt_ci"][1]
    assert summarize(R)["bwt_ci"] is None and summarize(R)["fwt"] is None  # without units or transfer: no interval


def test_avg_se_counts_the_items_the_stages_share():
    """Avg's SE against a bootstrap that resamples each task's items once for every stage (the stages score the
    same items); with one stage it is Last's SE."""
    import numpy as np

    from retain.continual.measure import summarize

    rng = np.random.default_rng(0)
    n, T = 300, 3
    base = rng.random((T, n)) < 0.5  # task j's items; later stages keep most answers (correlated across stages)
    S = {(i, j): np.where(rng.random(n) < 0.8, base[j], rng.random(n) < 0.5) for i in range(T) for j in range(i + 1)}
    units = lambda x: [{"seed": 0, "trial": 0, "items": list(range(n)), "predictions": ["a" if v else "b" for v in x],
                        "references": ["a"] * n}]
    R = [[100.0 * S[i, j].mean() if j <= i else None for j in range(T)] for i in range(T)]
    s = summarize(R, None, metrics=["exact_match"] * T, units=lambda i, j: units(S[i, j]))
    boot = []
    for _ in range(2000):
        idx = [rng.integers(0, n, n) for _ in range(T)]
        boot.append(np.mean([np.mean([100.0 * S[i, j][idx[j]].mean() for j in range(i + 1)]) for i in range(T)]))
    assert s["avg_se"] == pytest.approx(np.std(boot, ddof=1), rel=0.1)
    assert s["avg_se"] > 1.2 * np.sqrt(sum(((100.0 * S[i, j]).std(ddof=1) / np.sqrt(n) / (T * (i + 1))) ** 2
                                           for i in range(T) for j in range(i + 1)))  # not as if independent
    one = summarize(R[-1:], [[2.0] * T], metrics=["exact_match"] * T, units=lambda i, j: units(S[T - 1, j]))
    se_last = np.sqrt(sum(((100.0 * S[T - 1, j]).std(ddof=1) / np.sqrt(n)) ** 2 for j in range(T))) / T
    assert one["avg_se"] == pytest.approx(se_last, abs=1e-4)
    assert summarize(R)["avg_se"] is None
