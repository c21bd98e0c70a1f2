"""The engine's loss (logits only where labels are, padding-free packing) equals the plain padded loss."""

import pytest
import torch
from tests.conftest import sentiment_rows
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainingArguments

from retain.config import TrainConfig
from retain.data import TaskFormat, tokenize
from retain.engine import StageTrainer, packing_is_exact
from retain.methods import wrap
from retain.models import load_model


def _rows(loaded, n=6):
    fmt = TaskFormat("Review: {input}\nSentiment:", None, loaded.is_seq2seq)
    rows = tokenize(sentiment_rows(n), loaded.tokenizer, fmt, 64).rows
    rows[1]["input_ids"] = rows[1]["input_ids"] + [7, 8, 9]  # uneven lengths: real padding
    rows[1]["attention_mask"] += [1, 1, 1]
    rows[1]["labels"] = rows[1]["labels"] + [7, 8, 9]
    return rows


def _trainer(model, tmp_path, virtual=0):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    return StageTrainer(model=model, args=args, selective_loss=True, virtual_tokens=virtual)


@pytest.mark.parametrize("packed", [False, True])
def test_selective_loss_equals_model_loss(tmp_path, packed):
    loaded = load_model("tiny-random-llama")
    model = loaded.model.train()
    rows = _rows(loaded)
    padded = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100)(rows)
    with torch.no_grad():
        expected = model(**padded, use_cache=False).loss
    assert packing_is_exact(model)
    batch = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(rows) if packed else dict(padded)
    got = _trainer(model, tmp_path).compute_loss(model, dict(batch))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_selective_loss_with_soft_prompt_equals_peft_loss(tmp_path):
    loaded = load_model("tiny-random-llama")
    cfg = TrainConfig(model="tiny-random-llama", prompt_length=5)
    model = wrap(loaded.model, loaded.tokenizer, "promot", cfg, False).train()
    padded = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100)(_rows(loaded))
    with torch.no_grad():
        expected = model(**padded, use_cache=False).loss  # PEFT prepends -100 labels for the prompt
    got = _trainer(model, tmp_path, virtual=5).compute_loss(model, dict(padded))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_packing_check_refuses_a_model_that_mixes_packed_sequences():
    loaded = load_model("tiny-random-llama")
    model = loaded.model
    real_forward = model.forward

    def no_position_ids(*args, position_ids=None, **kw):  # a model that ignores position ids
        return real_forward(*args, **kw)

    model.forward = no_position_ids
    assert packing_is_exact(model) is False


@pytest.mark.parametrize("method", ["prompt", "full"])
def test_group_by_length_cuts_padding_of_padded_stages(tmp_path, monkeypatch, method):
    """--group-by-length draws padded batches from similar lengths; packed stages are unaffected."""
    import json

    import transformers
    from tests.conftest import write_jsonl

    from retain.workflows.train import train

    shapes = []
    for cls in (transformers.DataCollatorForSeq2Seq, transformers.DataCollatorWithFlattening):
        original = cls.__call__

        def spy(self, features, *a, _original=original, **kw):
            batch = _original(self, features, *a, **kw)
            shapes.append((batch["input_ids"].numel(), sum(len(f["input_ids"]) for f in features)))
            return batch

        monkeypatch.setattr(cls, "__call__", spy)
    data = write_jsonl(tmp_path / "train.jsonl", [{"input": "word " * (1 + (7 * i) % 40), "output": "yes"} for i in range(256)])
    share, tokens = {}, {}
    for grouped in (False, True):
        shapes.clear()
        out = tmp_path / f"{method}-{grouped}"
        train(TrainConfig(model="tiny-random-llama", method=method, train=str(data), template="{input} =>", output=str(out),
                          max_steps=6, batch_size=8, prompt_length=4, eval_every=0, save_every=0, group_by_length=grouped,
                          packing=method == "full"),  # a padded prompt stage (--no-packing) vs a packed stage
              progress=lambda m: None)
        stage = json.loads((out / "run.json").read_text())["stages"][0]
        assert stage["grouped_by_length"] is (grouped and method == "prompt") and stage["packed"] is (method == "full")
        computed, real = map(sum, zip(*shapes[:6]))  # the data loader may collate one batch ahead
        assert stage["input_tokens"] == real  # the Trainer's count of non-padding tokens
        share[grouped], tokens[grouped] = 1 - real / computed, real
    if method == "prompt":
        assert share[False] > 0.2 and share[True] < share[False] / 4, share
    else:  # packed: no padding either way, and grouping changes nothing
        assert share == {False: 0.0, True: 0.0} and tokens[False] == tokens[True]
