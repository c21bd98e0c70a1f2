"""ProMoT (Wang et al., 2023): prompt tuning, then model tuning under the frozen prompt; and the paper's
ablations: ``joint`` (prompt and model train together), ``ft-random-prompt`` (Table 6: fine-tuning under a fixed,
untrained random prompt) and ``promot-lora`` (App. C.7: LoRA as the removable part of stage 1)."""

from retain.methods.registry import Method, Stage

PROMOT = Method("promot", "stage 1 prompt tuning, then stage 2 model tuning with the prompt frozen", (
    Stage("stage1", ("prompt",), steps="stage1_steps", lr=("stage1_lr",)),
    Stage("stage2", ("model",), steps="stage2_steps", lr=("stage2_lr",)),
))
JOINT = Method("joint", "prompt and model trained together (ablation)",
               (Stage("joint", ("prompt", "model"), lr=("lr",), default_lr=2e-5),))
FT_RANDOM_PROMPT = Method("ft-random-prompt", "fine-tuning under a fixed, untrained random soft prompt, removed for "
                                              "other tasks like promot's (ablation)",
                          (Stage("finetune", ("model",), lr=("lr",), default_lr=2e-5),),
                          attached=("prompt",), settings=(("prompt_init", "random"),))
PROMOT_LORA = Method("promot-lora", "stage 1 LoRA with the model frozen, then stage 2 model tuning with the LoRA frozen; "
                                    "the LoRA is removed for other tasks (ablation)", (
    Stage("stage1", ("lora",), steps="stage1_steps", lr=("stage1_lora_lr",)),
    Stage("stage2", ("model",), steps="stage2_steps", lr=("stage2_lr",)),
))
