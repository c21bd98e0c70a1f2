"""retain train end to end on tiny models: artifacts load with plain transformers/peft."""

import json

import pytest
import torch
from peft import PeftModel
from tests.conftest import cli
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

import retain

TEMPLATE = "Review: {input}\\nSentiment:"


def _train(tmp_path, task, spec, method, *extra):
    train, val = task
    out = tmp_path / f"{spec}-{method}"
    cli("train", "--model", spec, "--method", method, "--train", train, "--validation", val, "--template", TEMPLATE,
        "--output", out, "--max-steps", 4, "--stage1-steps", 3, "--stage2-steps", 3, "--eval-every", 2,
        "--batch-size", 4, "--prompt-length", 4, "--stage2-lr", "1e-3", "--lr", "1e-3", *extra)
    return out


def _logits(model, tok, text, seq2seq):
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        if seq2seq:
            return model(**enc, decoder_input_ids=torch.tensor([[0, 5, 6]])).logits
        return model(**enc).logits


@pytest.mark.parametrize("spec,auto,seq2seq", [("tiny-random-llama", AutoModelForCausalLM, False),
                                               ("tiny-random-t5", AutoModelForSeq2SeqLM, True)])
def test_promot_run_artifacts(tmp_path, task, spec, auto, seq2seq):
    out = _train(tmp_path, task, spec, "promot")
    assert {p.name for p in out.iterdir()} >= {"model", "prompt", "run.json", "manifest.json", "train_log.jsonl"}
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir()), "staging dir left behind"
    info = json.loads((out / "run.json").read_text())
    assert info["method"] == "promot" and [s["stage"] for s in info["stages"]] == ["stage1", "stage2"]
    assert all(s["evaluations"] for s in info["stages"]), "no evaluation recorded"
    assert info["versions"]["transformers"] and info["wall_time_s"] > 0

    plain = auto.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    run = retain.load_run(out)
    text = "Review: the film was good\nSentiment:"
    # without the prompt, the tuned model is exactly a plain from_pretrained(DIR/model)
    assert torch.equal(_logits(run.model, tok, text, seq2seq), _logits(plain, tok, text, seq2seq))
    # the prompt adapter loads with plain peft, and changes the outputs
    prompted = PeftModel.from_pretrained(auto.from_pretrained(out / "model"), out / "prompt").eval()
    with_prompt = _logits(prompted, tok, text, seq2seq)
    assert torch.equal(with_prompt, _logits(run.prompted, tok, text, seq2seq))
    if not seq2seq:
        assert with_prompt.shape[1] == _logits(plain, tok, text, seq2seq).shape[1] + 4
    # a second load reproduces the logits exactly
    again = retain.load_run(out)
    assert torch.equal(_logits(again.prompted, tok, text, seq2seq), with_prompt)


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-qwen", "tiny-random-gemma3", "tiny-random-gpt2", "tiny-random-t5"])
def test_prompt_generation_cache_on_equals_off(tmp_path, task, spec):
    """retain's generation with a soft prompt (KV cache) equals greedy decoding by full forward passes
    with no cache at all, token for token, on models whose tokenizer adds a BOS, nothing, or a </s>."""
    from retain.tokens import prompt_ids

    out = _train(tmp_path, task, spec, "prompt", "--lr", "0.3")
    run = retain.load_run(out)
    with torch.no_grad():  # a prompt that matters
        run.prompted.prompt_encoder[run.prompted.active_adapter].embedding.weight.normal_(0, 2.0)
    text = "Review: the film was bad\nSentiment:"
    got = run.generate([text], raw=True, max_new_tokens=12, first_line=False)[0]
    ids = prompt_ids(run.tokenizer, text, is_seq2seq=run.is_seq2seq)
    core, soft = run.prompted.get_base_model(), run.prompted.get_prompt(1)
    emb = core.get_input_embeddings()
    new: list[int] = []
    with torch.no_grad():
        for _ in range(12):  # the reference: every step from scratch, soft prompt as embeddings, no cache
            if run.is_seq2seq:
                enc = torch.cat([soft, emb(torch.tensor([ids]))], 1)
                dec = torch.tensor([[core.config.decoder_start_token_id] + new])
                logits = core(inputs_embeds=enc, decoder_input_ids=dec, use_cache=False).logits[0, -1]
            else:
                logits = core(inputs_embeds=torch.cat([soft, emb(torch.tensor([ids + new]))], 1), use_cache=False).logits[0, -1]
            new.append(int(logits.argmax()))
            if new[-1] == run.tokenizer.eos_token_id:
                break
    want = run.tokenizer.decode(new, skip_special_tokens=True).strip()
    assert got == want and len(new) > 2
    if not run.is_seq2seq:  # the exact ids fed: [BOS] where the tokenizer adds one, never twice
        assert ids[0] == run.tokenizer.bos_token_id if spec in ("tiny-random-llama", "tiny-random-gemma3") else ids[0] != run.tokenizer.bos_token_id


def test_lora_and_prompt_runs_keep_no_base_copy(tmp_path, task):
    lora = _train(tmp_path, task, "tiny-random-llama", "lora")
    assert (lora / "lora" / "adapter_model.safetensors").is_file() and not (lora / "model").exists()
    prompt = _train(tmp_path, task, "tiny-random-llama", "prompt")
    assert (prompt / "prompt" / "adapter_model.safetensors").is_file() and not (prompt / "model").exists()
    run = retain.load_run(prompt)
    from retain.models import load_model, weights_fingerprint

    assert weights_fingerprint(run.model) == weights_fingerprint(load_model("tiny-random-llama").model)


def test_full_one_shot_records_demonstration(tmp_path, task):
    out = _train(tmp_path, task, "tiny-random-llama", "full", "--one-shot")
    info = json.loads((out / "run.json").read_text())
    shot = info["format"]["one_shot"]
    assert shot and shot["output"] in ("positive", "negative")
    run = retain.load_run(out)
    assert run.format.prompt({"input": "x"}).startswith(f"Review: {shot['input']}\nSentiment: {shot['output']}\n\n")


def test_joint_trains_prompt_and_model(tmp_path, task):
    out = _train(tmp_path, task, "tiny-random-llama", "joint")
    info = json.loads((out / "run.json").read_text())
    assert info["stages"][0]["trains"] == "prompt+model"
    assert (out / "model").is_dir() and (out / "prompt").is_dir()


def test_generate_cli_with_and_without_prompt(tmp_path, task):
    out = _train(tmp_path, task, "tiny-random-llama", "promot")
    a = cli("generate", "--run", out, "the film was good", "it was bad").stdout.splitlines()
    b = cli("generate", "--run", out, "--no-prompt", "the film was good", "it was bad").stdout.splitlines()
    assert len(a) == 2 and len(b) == 2
    run = retain.load_run(out)
    assert a == run.generate(["the film was good", "it was bad"])
    assert b == run.generate(["the film was good", "it was bad"], use_prompt=False)


def test_generate_cli_num_beams(tmp_path, task):
    from retain.evaluation.decoding import using

    out = _train(tmp_path, task, "tiny-random-llama", "promot")
    texts = ["the film was good", "it was bad", "a dull, long film", "great acting"]
    flags = ("--full", "--max-new-tokens", "8")
    beam = cli("generate", "--run", out, "--num-beams", "3", *flags, *texts).stdout.splitlines()
    greedy = cli("generate", "--run", out, *flags, *texts).stdout.splitlines()
    run = retain.load_run(out)
    with using(3):
        assert beam == run.generate(texts, max_new_tokens=8, first_line=False)
    assert greedy == run.generate(texts, max_new_tokens=8, first_line=False)
    assert beam != greedy  # the flag reaches the decoder (these inputs decode differently with 3 beams)
