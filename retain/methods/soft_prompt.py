"""Soft prompts with PEFT prompt tuning.

PEFT has no option to train the base under a prompt; stage 2 freezes the
``prompt_encoder`` and makes the base trainable instead (see ``methods.prepare``).
"""

from __future__ import annotations

import torch


def attach_prompt(model, tokenizer, cfg, is_seq2seq: bool, adapters: tuple[str, ...] = ()):
    """A PEFT prompt-tuning model: one adapter (``default``), or one per name in ``adapters`` (multi-task: each task's
    prompt is its own standard adapter, initialised alike; adapter i draws its random init with seed ``cfg.seed + i``)."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    init = {"text": PromptTuningInit.RANDOM, "vocab": PromptTuningInit.SAMPLE_VOCAB, "random": PromptTuningInit.RANDOM}[cfg.prompt_init]
    pconf = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        num_virtual_tokens=cfg.prompt_length,
        prompt_tuning_init=init,
        base_model_name_or_path=cfg.model,
    )
    names = tuple(adapters) or ("default",)
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, pconf, adapter_name=names[0])
    for i, name in enumerate(names):
        if i:
            torch.manual_seed(cfg.seed + i)
            peft_model.add_adapter(name, pconf)
        peft_model.peft_config[name].base_model_name_or_path = cfg.model
        _initialise(peft_model.prompt_encoder[name].embedding, peft_model, tokenizer, cfg)
    peft_model.set_adapter(names[0])
    return peft_model


def _initialise(emb, peft_model, tokenizer, cfg) -> None:
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


def prompt_embedding(model) -> torch.nn.Embedding:
    enc = model.prompt_encoder[model.active_adapter]
    return enc.embedding


def prompt_parameters(model, *, active: bool = False) -> list[torch.nn.Parameter]:
    """Every soft prompt's parameters (``active``: only the active adapter's)."""
    if not hasattr(model, "prompt_encoder"):
        return []
    return list((model.prompt_encoder[model.active_adapter] if active else model.prompt_encoder).parameters())


def prompt_adapters(model) -> tuple[str, ...]:
    """The names of a model's prompt adapters (empty without a soft prompt)."""
    return tuple(model.prompt_encoder.keys()) if hasattr(model, "prompt_encoder") else ()
