"""Soft prompts with PEFT prompt tuning.

PEFT has no option to train the base under a prompt; stage 2 freezes the
``prompt_encoder`` and makes the base trainable instead (see ``methods.prepare``).
"""

from __future__ import annotations

import torch


def attach_prompt(model, tokenizer, cfg, is_seq2seq: bool):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    init = {"text": PromptTuningInit.RANDOM, "vocab": PromptTuningInit.SAMPLE_VOCAB, "random": PromptTuningInit.RANDOM}[cfg.prompt_init]
    pconf = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        num_virtual_tokens=cfg.prompt_length,
        prompt_tuning_init=init,
        base_model_name_or_path=cfg.model,
    )
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, pconf)
    peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path = cfg.model
    emb = prompt_embedding(peft_model)
    with torch.no_grad():
        if cfg.prompt_init == "text":
            # PEFT's TEXT init needs a tokenizer path; ours may be in memory, so
            # the same rule is applied here: the init text's token embeddings,
            # repeated to the prompt length.
            ids = tokenizer(cfg.prompt_init_text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
            ids = (ids * (emb.weight.shape[0] // len(ids) + 1))[: emb.weight.shape[0]]
            word = peft_model.get_base_model().get_input_embeddings().weight
            emb.weight.copy_(word[torch.tensor(ids)].detach().clone())
        elif cfg.prompt_init == "random":
            emb.weight.uniform_(0.0, 0.5)
    return peft_model


def prompt_embedding(model) -> torch.nn.Embedding:
    enc = model.prompt_encoder[model.active_adapter]
    return enc.embedding


def prompt_parameters(model) -> list[torch.nn.Parameter]:
    if not hasattr(model, "prompt_encoder"):
        return []
    return list(model.prompt_encoder.parameters())
