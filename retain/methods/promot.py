"""ProMoT (Wang et al., 2023): prompt tuning, then model tuning under the frozen prompt; and its
``joint`` ablation, where prompt and model train together."""

from retain.methods.registry import Method, Stage

PROMOT = Method("promot", "stage 1 prompt tuning, then stage 2 model tuning with the prompt frozen", (
    Stage("stage1", ("prompt",), steps="stage1_steps", lr=("stage1_lr",)),
    Stage("stage2", ("model",), steps="stage2_steps", lr=("stage2_lr",)),
))
JOINT = Method("joint", "prompt and model trained together (ablation)",
               (Stage("joint", ("prompt", "model"), lr=("lr",), default_lr=2e-5),))
