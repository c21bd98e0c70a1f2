"""What a method's parts mean for a model: attaching them, and which parameters each stage trains."""

from __future__ import annotations

import torch

from retain.methods.lora import attach_lora, lora_parameters
from retain.methods.registry import Method, Stage, get
from retain.methods.soft_prompt import attach_prompt, prompt_parameters


def wrap(model, tokenizer, method: Method | str, cfg, is_seq2seq: bool):
    """Wrap the base model with the parts the method (or registered method name) attaches: a soft prompt or LoRA."""
    if isinstance(method, str):
        method = get(method)
    cfg = method.configure(cfg)
    if method.uses_prompt:
        return attach_prompt(model, tokenizer, cfg, is_seq2seq)
    if method.uses_lora:
        return attach_lora(model, cfg, is_seq2seq)
    return model


def prepare(model, stage: Stage) -> None:
    """Set requires_grad for one stage: exactly the stage's parts train."""
    if stage.trains_lora:
        return  # PEFT marks only the (active) LoRA weights trainable; continual methods choose which adapter
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.requires_grad_(stage.trains_model)
    for p in prompt_parameters(model):
        p.requires_grad_(stage.trains_prompt)
    for p in lora_parameters(model):  # attached, not trained by this stage (promot-lora stage 2)
        p.requires_grad_(False)


def param_groups(model, lr: float, prompt_lr: float) -> list[dict]:
    """Optimizer groups: soft-prompt parameters at their own learning rate."""
    prompt_ids = {id(p) for p in prompt_parameters(model)}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in prompt_ids]
    prompt = [p for p in model.parameters() if p.requires_grad and id(p) in prompt_ids]
    groups = []
    if rest:
        groups.append({"params": rest, "lr": lr})
    if prompt:
        groups.append({"params": prompt, "lr": prompt_lr, "weight_decay": 0.0})
    return groups


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
