"""LoRA adapters with PEFT."""

from __future__ import annotations


def lora_config(cfg, is_seq2seq: bool):
    from peft import LoraConfig, TaskType

    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=target, base_model_name_or_path=cfg.model,
    )


def attach_lora(model, cfg, is_seq2seq: bool, adapter_name: str = "default"):
    import torch
    from peft import get_peft_model

    torch.manual_seed(cfg.seed)  # the adapter's initial A matrices depend on the seed only
    peft_model = get_peft_model(model, lora_config(cfg, is_seq2seq), adapter_name=adapter_name)
    peft_model.peft_config[adapter_name].base_model_name_or_path = cfg.model
    return peft_model
