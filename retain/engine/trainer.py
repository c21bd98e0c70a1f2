"""The Trainer adapter: a ``transformers.Trainer`` whose loss is taken on the output tokens only (with
label smoothing), whose checkpoints hold the whole model state, and which stops cleanly on a
non-finite loss or Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer

from retain.distributed import world
from retain.engine.callbacks import Veto
from retain.engine.checkpoints import STATE_FILE, load_state, save_state


class StageTrainer(Trainer):
    """A Trainer whose checkpoints hold the whole model state (base + prompt/LoRA) in
    safetensors, and which stops cleanly on a non-finite loss or on Ctrl-C."""

    interrupted = False  # set by the SIGINT handler
    bad_step: int | None = None
    stopped_by_interrupt = False

    def __init__(self, *args, selective_loss: bool = False, virtual_tokens: int = 0, label_smoothing: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.selective_loss, self.virtual_tokens, self.label_smoothing = selective_loss, virtual_tokens, label_smoothing
        self.add_callback(Veto(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Token cross-entropy (with ``--label-smoothing``) on the labelled tokens.

        Causal models: logits only where a label is predicted. The loss is on the output tokens only, so
        the LM head (a vocabulary-sized matmul per position) is applied just to positions whose next token
        is a label: the union over the batch, passed to the model as ``logits_to_keep``. Same value as the
        model's own shifted cross-entropy (see the tests). Encoder-decoder models: the labels stay in the
        inputs (the model shifts them into its decoder inputs) and the loss is taken on every logit.
        """
        if "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.selective_loss:
            labels = inputs.pop("labels")
            keep = (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)
            outputs = model(**inputs, logits_to_keep=keep + self.virtual_tokens, use_cache=False)
            target = labels[:, keep + 1]
        else:
            outputs = model(**inputs, use_cache=False)
            target = inputs["labels"]
        logits = outputs.logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100,
                               reduction="sum", label_smoothing=self.label_smoothing)
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if num_items_in_batch is None:
            loss = loss / (target != -100).sum().clamp(min=1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:  # the Trainer averages gradients over processes
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        flags = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0, 1.0 if self.interrupted else 0.0])
        if world()[1] > 1:  # every process must agree, or DDP would hang
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        if flags[0] > 0 and self.bad_step is None:
            self.bad_step = self.state.global_step + 1
        elif flags[1] > 0:
            self.stopped_by_interrupt = True
        return loss

    def _save(self, output_dir=None, state_dict=None):
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_state(self.model, out / STATE_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_state(model or self.model, Path(resume_from_checkpoint) / STATE_FILE)


