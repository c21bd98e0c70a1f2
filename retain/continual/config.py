"""``retain continual`` options as plain data (flags are generated from the fields)."""

from __future__ import annotations

from dataclasses import dataclass

from retain.config import opt

CONTINUAL_METHODS = ("switchcit", "sequential", "sequential-lora", "replay", "multitask")


@dataclass
class ContinualConfig:
    model: str = opt("smollm2-135m", "Base model: alias (smollm2-135m, tiny-random-llama, tiny-random-t5), a .gguf file, a local directory or a Hub id.")
    method: str = opt("switchcit", "switchcit: one LoRA adapter per task on the frozen base + a switch that routes each input; sequential: full fine-tuning task after task; sequential-lora: one LoRA adapter trained task after task; replay: sequential with stored examples of earlier tasks mixed in; multitask: all tasks at once (upper bound).", choices=CONTINUAL_METHODS)
    output: str = opt(None, "Directory to create: results (and, for switchcit, the registry). Written to a hidden sibling and renamed when complete.")
    resume_from: str | None = opt(None, "switchcit only: an existing registry to extend with --tasks (old adapters are copied byte for byte). The result replaces it unless --output is given.")
    task_config: str | None = opt(None, "YAML/JSON mapping task name -> {metric, template, max_new_tokens, constraint}; overrides a task folder's task.json. Default metric: rougeL.")
    # training budget
    max_steps: int = opt(100, "Optimizer steps per task (multitask: steps x number of tasks, on the mixture).", positive=True)
    lr: float | None = opt(None, "Learning rate; default 2e-4 for LoRA methods (switchcit, sequential-lora), 2e-5 for full fine-tuning (sequential, replay, multitask).", positive=True)
    batch_size: int = opt(8, "Examples per device per step.", positive=True)
    grad_accum: int = opt(1, "Gradient accumulation steps.", positive=True)
    max_length: int = opt(256, "Longest tokenised training example (prompt cut from the left).", positive=True)
    optim: str = opt("adamw_torch_fused", "Optimizer (transformers 'optim' name; adamw_torch_fused: AdamW in one fused kernel per step).")
    scheduler: str = opt("constant_with_warmup", "Learning-rate schedule (transformers name).")
    warmup_steps: int = opt(0, "Warm-up steps per task.", nonneg=True)
    weight_decay: float = opt(0.0, "Weight decay.", nonneg=True)
    label_smoothing: float = opt(0.0, "Label smoothing.", nonneg=True)
    lora_r: int = opt(8, "LoRA rank (reference code: 64).", positive=True)
    lora_alpha: int = opt(16, "LoRA alpha (reference code: 16).", positive=True)
    lora_dropout: float = opt(0.05, "LoRA dropout (reference code: 0.05).", nonneg=True)
    lora_target: str = opt("all-linear", "LoRA target modules: 'all-linear' or a comma-separated list.")
    # switch
    feature_model: str = opt("base", "Model whose last-token final hidden state is the switch's input: 'base' (the base model, adapters off) or any model spec.")
    retain_fraction: float = opt(0.01, "Share of each task's training inputs stored for retraining the switch (the only thing kept of old tasks).", positive=True)
    retain_min: int = opt(20, "Minimum number of stored inputs per task.", positive=True)
    switch_hidden: int = opt(200, "Hidden units of the switch (Linear-ReLU-Linear).", positive=True)
    switch_epochs: int = opt(20, "Switch training epochs (after each task, on the stored inputs only).", positive=True)
    switch_lr: float = opt(1e-3, "Switch AdamW learning rate.", positive=True)
    switch_batch_size: int = opt(32, "Switch training batch size.", positive=True)
    switch_max_length: int = opt(256, "Tokens of an input read by the feature model (the start of the input is kept).", positive=True)
    # replay
    replay_fraction: float = opt(0.01, "replay: share of each earlier task's training set kept in the replay buffer.", positive=True)
    replay_min: int = opt(20, "replay: minimum buffer examples per earlier task.", positive=True)
    replay_ratio: float = opt(0.2, "replay: share of each stage's training examples drawn (with repetition) from the buffer.", positive=True)
    # measurement
    eval_samples: int = opt(50, "Validation items per task evaluated after every stage (the first N).", positive=True)
    max_new_tokens: int = opt(48, "Cap on generated tokens; per task: its config's value, else its longest training output (first 200) + 4, capped.", positive=True)
    eval_batch_size: int = opt(16, "Generation batch size.", positive=True)
    # engine plumbing
    save_every: int = opt(0, "Write a checkpoint every N steps within a task (0: none).", nonneg=True)
    log_every: int = opt(10, "Log loss every N steps.", positive=True)
    seed: int = opt(0, "Random seed (data order, samples of stored inputs, initialisation).")
    overwrite: bool = opt(False, "Replace an existing output directory.")
    trust_remote_code: bool = opt(False, "Allow models whose code lives in their Hub repository.")
    allow_pickle: bool = opt(False, "Allow pickle (.bin/.pt) weights.")
