"""The ProMoT mechanics on tiny models: what each stage may and may not change."""

import pytest
import torch
from tests.conftest import sentiment_rows

from retain.config import TrainConfig
from retain.data import TaskFormat, tokenize
from retain.engine import run_stage
from retain.methods import get as get_method
from retain.methods import wrap
from retain.methods.soft_prompt import prompt_embedding
from retain.models import load_model


def _snapshot(module):
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_stage1_freezes_base_stage2_freezes_prompt(spec, tmp_path):
    loaded = load_model(spec)
    cfg = TrainConfig(model=spec, method="promot", stage1_steps=4, stage2_steps=4, stage2_lr=1e-3, batch_size=4,
                      eval_every=0, save_every=0, prompt_length=5)
    fmt = TaskFormat("Review: {input}\nSentiment:", None, loaded.is_seq2seq)
    rows = tokenize(sentiment_rows(16), loaded.tokenizer, fmt, 64).rows
    model = wrap(loaded.model, loaded.tokenizer, "promot", cfg, loaded.is_seq2seq)
    base = model.get_base_model()
    base_before = _snapshot(base)
    prompt_before = prompt_embedding(model).weight.detach().clone()

    s1, s2 = get_method("promot").stages
    steps, lr, plr = s1.budget(cfg)
    run_stage(model, loaded.tokenizer, s1, rows=rows, steps=steps, lr=lr, prompt_lr=plr, cfg=cfg, stage_dir=tmp_path / "s1")
    for name, t in base.state_dict().items():
        assert torch.equal(t, base_before[name]), f"stage 1 changed base weight {name}"
    prompt_after_1 = prompt_embedding(model).weight.detach().clone()
    assert not torch.equal(prompt_after_1, prompt_before), "stage 1 did not train the prompt"

    steps, lr, plr = s2.budget(cfg)
    run_stage(model, loaded.tokenizer, s2, rows=rows, steps=steps, lr=lr, prompt_lr=plr, cfg=cfg, stage_dir=tmp_path / "s2")
    assert torch.equal(prompt_embedding(model).weight, prompt_after_1), "stage 2 changed the prompt"
    changed = [n for n, t in base.state_dict().items() if not torch.equal(t, base_before[n])]
    assert len(changed) > len(base_before) // 2, f"stage 2 changed only {changed}"
