"""The single-stage baselines: full fine-tuning, prompt tuning (Lester et al., 2021) and LoRA (Hu et al., 2022)."""

from retain.methods.registry import Method, Stage

FULL = Method("full", "standard fine-tuning of every weight",
              (Stage("finetune", ("model",), lr=("lr",), default_lr=2e-5),))
PROMPT = Method("prompt", "prompt tuning: a soft prompt trains, the model is frozen",
                (Stage("prompt", ("prompt",), lr=("lr", "stage1_lr"), prompt_lr=("lr", "stage1_lr")),))
LORA = Method("lora", "LoRA adapters train, the model is frozen",
              (Stage("lora", ("lora",), lr=("lr",), default_lr=2e-4),))
