"""``retain continual`` options as plain data (flags are generated from the fields)."""

from __future__ import annotations

from dataclasses import dataclass

from retain.config import EngineOptions, model_help, opt

SWITCH_POOLING = ("mean", "last")


def _method_names():
    from retain.continual.methods import names

    return names()


def _method_help():
    from retain.continual.methods import help_text

    return "Continual method: " + help_text()


@dataclass
class ContinualConfig(EngineOptions):
    model: str = opt("smollm2-135m", lambda: model_help("Base model"))
    method: str = opt("switchcit", _method_help, choices=_method_names)
    tasks: tuple = opt((), "Task folders, learnt in this order.", nargs="+", metavar="DIR")
    output: str = opt(None, "Directory to create: results (and, for switchcit, the registry). Written to a hidden sibling and renamed when complete.")
    resume_from: str | None = opt(None, "switchcit only: an existing registry to extend with --tasks (old adapters are copied byte for byte). The result replaces it unless --output is given.")
    adapters_from: str | None = opt(None, "arrow only: take each task's LoRA adapter from a SwitchCIT registry (the --output of 'retain continual --method switchcit') instead of training it; copied byte for byte. Refused (one line) unless the registry passes its manifest, has the same base weights, holds every --tasks task by name with the same task settings, and each adapter was trained with this run's training options (as registry.json records them per task).", metavar="REGISTRY")
    base_scores: str | None = opt(None, "Take the base model's scores (on the tasks, for FWT, and on the general suite) from an earlier 'retain continual' run (its folder or results.json) instead of scoring the base again; refused (one line naming what differs) unless the base weights, decoding, evaluation batch size, each task's settings and validation rows, and the general suite, shots and seed are the same.", metavar="RESULTS")
    task_config: str | None = opt(None, "YAML/JSON mapping task name -> {metric, template, max_new_tokens, constraint}; overrides a task folder's task.json. Default metric: rougeL.")
    # training budget
    max_steps: int = opt(100, "Optimizer steps per task (multitask: steps x number of tasks, on the mixture).", positive=True)
    lr: float | None = opt(None, "Learning rate; default 2e-4 for LoRA methods (switchcit, sequential-lora), 2e-5 for full fine-tuning (sequential, replay, multitask).", positive=True)
    # switch
    feature_model: str = opt("base", "Model whose hidden states are the switch's input: 'base' (the base model, adapters off) or any model spec.")
    retain_fraction: float = opt(0.01, "Share of each task's training inputs stored for retraining the switch (the only thing kept of old tasks).", positive=True)
    retain_min: int = opt(20, "Minimum number of stored inputs per task.", positive=True)
    switch_hidden: int = opt(200, "Hidden units of the switch (Linear-ReLU-Linear).", positive=True)
    switch_epochs: int = opt(20, "Switch training epochs (after each task, on the stored inputs only).", positive=True)
    switch_lr: float = opt(1e-3, "Switch AdamW learning rate.", positive=True)
    switch_batch_size: int = opt(32, "Switch training batch size.", positive=True)
    switch_max_length: int = opt(16, "Tokens of an input read by the feature model (the start of the input is kept). Short keeps routing cheap next to generation; raise it when tasks' inputs share a long common opening.", positive=True)
    switch_pooling: str = opt("mean", "Switch feature: the 'mean' of the hidden states (at --switch-layer) over the tokens read, or the 'last' token's (the paper's choice; it needs the whole instruction, so a larger --switch-max-length).", choices=SWITCH_POOLING)
    switch_layer: str = opt("middle", "Block whose output the switch reads: 'middle' (block n_layers // 2; the feature model's forward stops there, so it costs about half), 'last' (the final hidden state after the model's last norm, the paper's choice) or a block number 1..n_layers.")
    # arrow (PEFT's gradient-free routing over the per-task LoRA adapters)
    arrow_top_k: int = opt(3, "arrow: adapters mixed per token (PEFT ArrowConfig.top_k; at most the number of tasks learnt).", positive=True)
    arrow_temperature: float = opt(1.0, "arrow: softmax temperature of the routing coefficients (PEFT ArrowConfig.router_temperature).", positive=True)
    # osf (PEFT's Orthogonal Subspace Fine-tuning, task after task)
    osf_rank: float = opt(0.5, "osf: share of each weight matrix's singular directions frozen for the first task; raised evenly after each task (task i of T, from 0, freezes share + i (1 - share) / T; the last one trains the lowest (1 - share) / T of them). PEFT OSFConfig.effective_rank as a fraction; below 1.", positive=True)
    # replay
    replay_fraction: float = opt(0.01, "replay: share of each earlier task's training set kept in the replay buffer.", positive=True)
    replay_min: int = opt(20, "replay: minimum buffer examples per earlier task.", positive=True)
    replay_ratio: float = opt(0.2, "replay: share of each stage's training examples drawn (with repetition) from the buffer.", positive=True)
    # measurement
    eval_samples: int = opt(50, "Validation items per task evaluated after every stage (the first N).", positive=True)
    max_new_tokens: int = opt(48, "Cap on generated tokens; per task: its config's value, else its longest training output (first 200) + 4, capped.", positive=True)
    eval_every: int = opt(50, "Keep each task's best weights: score the task being learnt (multitask: the mean over tasks) every N steps and at the end, restore the best; 0 keeps the last weights.", nonneg=True)
    select_samples: int = opt(50, "Validation items that choose the best weights (--eval-every): the rows after the first --eval-samples (which measure R), or the first ones when the file has no more.", positive=True)
    save_every: int = opt(0, "Write a resumable checkpoint every N steps within a task (0: none); an interrupted run is then kept for --resume.", nonneg=True)  # engine default: 50
    resume: bool = opt(False, "Continue an interrupted run (the same command) from its hidden staging folder: finished tasks are reloaded, the interrupted one continues from its last checkpoint (--save-every).")
    # general ability (retain.continual.general)
    general_data: str = opt("builtin", "switchcit: the switch's general class, whose inputs go to the base model with no adapter, learnt "
                                       "from 'builtin' (the built-in suite's prompts and the project's generic instructions), a JSONL "
                                       "file (string field 'input' per line) or 'none' (no general class, as in the paper). Extending a "
                                       "registry keeps its own.", metavar="FILE")
    general_size: int = opt(100, "switchcit: general instructions stored for the general class (up to as many others are held out "
                                 "to measure how general inputs are routed).", positive=True)
    general_suite: str = opt("builtin", "Suite the deployed system is scored on after every stage (the base model before the first), "
                                        "as 'retain eval --suite' takes it: 'builtin', a folder of task .jsonl files or a suite .yaml; "
                                        "'none' skips it.")
    general_examples: int = opt(20, "Test items per general-suite task.", positive=True)
    general_shots: int = opt(4, "Demonstrations per general-suite prompt (a YAML task's own 'shots' wins).", nonneg=True)
