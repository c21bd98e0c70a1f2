"""Fine-tuning methods as data: each is a list of stages, each stage names what trains.

| method  | stages                              | artifacts            |
|---------|-------------------------------------|----------------------|
| full    | model                               | model/               |
| prompt  | prompt                              | prompt/ (base ref)   |
| lora    | lora                                | lora/ (base ref)     |
| promot  | prompt, then model (prompt frozen)  | model/, prompt/      |
| joint   | prompt+model together               | model/, prompt/      |

``--one-shot`` is orthogonal: it changes the data, not the stages. A new method
is a new row here plus, if it trains something new, a case in ``prepare``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retain.methods.soft_prompt import attach_prompt, prompt_parameters
from retain.methods.lora import attach_lora


@dataclass(frozen=True)
class Stage:
    name: str
    trains: str  # "prompt" | "model" | "prompt+model" | "lora"

    @property
    def trains_prompt(self) -> bool:
        return "prompt" in self.trains

    @property
    def trains_model(self) -> bool:
        return "model" in self.trains


METHODS: dict[str, tuple[Stage, ...]] = {
    "full": (Stage("finetune", "model"),),
    "prompt": (Stage("prompt", "prompt"),),
    "lora": (Stage("lora", "lora"),),
    "promot": (Stage("stage1", "prompt"), Stage("stage2", "model")),
    "joint": (Stage("joint", "prompt+model"),),
}

DEFAULT_LR = {"model": 2e-5, "prompt": 3e-2, "lora": 2e-4, "prompt+model": 2e-5}


def uses_prompt(method: str) -> bool:
    return any(s.trains_prompt for s in METHODS[method])


def uses_lora(method: str) -> bool:
    return any(s.trains == "lora" for s in METHODS[method])


def changes_base(method: str) -> bool:
    return any(s.trains_model for s in METHODS[method])


def stage_budget(method: str, stage: Stage, cfg) -> tuple[int, float, float]:
    """(steps, model/lora learning rate, prompt learning rate) of a stage."""
    stages = METHODS[method]
    if len(stages) == 2:  # promot
        return (cfg.stage1_steps, cfg.stage1_lr, cfg.stage1_lr) if stage is stages[0] else (cfg.stage2_steps, cfg.stage2_lr, cfg.stage1_lr)
    if stage.trains == "prompt":
        lr = cfg.lr or cfg.stage1_lr
        return cfg.max_steps, lr, lr
    return cfg.max_steps, cfg.lr or DEFAULT_LR[stage.trains], cfg.stage1_lr


def wrap(model, tokenizer, method: str, cfg, is_seq2seq: bool):
    """Wrap the base model with what the method trains (a soft prompt or LoRA)."""
    if uses_prompt(method):
        return attach_prompt(model, tokenizer, cfg, is_seq2seq)
    if uses_lora(method):
        return attach_lora(model, cfg, is_seq2seq)
    return model


def prepare(model, stage: Stage) -> None:
    """Set requires_grad for one stage: exactly the stage's parameters train."""
    if stage.trains == "lora":
        return  # PEFT already marks only the LoRA weights trainable
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.requires_grad_(stage.trains_model)
    for p in prompt_parameters(model):
        p.requires_grad_(stage.trains_prompt)


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
