"""The engine's loss (logits only where labels are, padding-free packing) equals the plain padded loss."""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainingArguments

from retain.config import TrainConfig
from retain.data import TaskFormat, tokenize
from retain.engine import _StageTrainer, packing_is_exact
from retain.methods import wrap
from retain.models import load_model
from tests.conftest import sentiment_rows


def _rows(loaded, n=6):
    fmt = TaskFormat("Review: {input}\nSentiment:", None, loaded.is_seq2seq)
    rows = tokenize(sentiment_rows(n), loaded.tokenizer, fmt, 64).rows
    rows[1]["input_ids"] = rows[1]["input_ids"] + [7, 8, 9]  # uneven lengths: real padding
    rows[1]["attention_mask"] += [1, 1, 1]
    rows[1]["labels"] = rows[1]["labels"] + [7, 8, 9]
    return rows


def _trainer(model, tmp_path, virtual=0):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    return _StageTrainer(model=model, args=args, selective_loss=True, virtual_tokens=virtual)


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
