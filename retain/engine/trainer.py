"""The Trainer adapter: a ``transformers.Trainer`` whose loss is taken on the output tokens only (with
label smoothing), whose checkpoints hold the whole model state, and which stops cleanly on a
non-finite loss or Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer

from retain.distributed import is_main, world
from retain.engine.callbacks import Veto
from retain.engine.checkpoints import STATE_FILE, drop_aliases, full_state, load_state, write_state


class StageTrainer(Trainer):
    """A Trainer whose checkpoints hold the whole model state (base + prompt/LoRA) in
    safetensors, and which stops cleanly on a non-finite loss or on Ctrl-C."""

    interrupted = False  # set by the SIGINT handler
    bad_step: int | None = None
    stopped_by_interrupt = False

    def __init__(self, *args, selective_loss: bool = False, virtual_tokens: int = 0, label_smoothing: float = 0.0,
                 optimizer_factory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.selective_loss, self.virtual_tokens, self.label_smoothing = selective_loss, virtual_tokens, label_smoothing
        self.optimizer_factory = optimizer_factory
        self.add_callback(Veto(self))

    def create_optimizer(self, model=None):
        """retain's parameter groups (``optimizer_factory(model)``: the soft prompt at its own rate), built when the
        Trainer asks: under FSDP the Trainer refuses an optimizer passed in ("Passing `optimizers` is not allowed if
        PyTorch FSDP is enabled") and builds it on the model it is about to shard (or has sharded)."""
        if self.optimizer is None and self.optimizer_factory is not None:
            self.optimizer = self.optimizer_factory(model if model is not None else self.model)
        return super().create_optimizer(model)

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

    def _track_num_input_tokens(self, inputs):
        """Real tokens only: a packed soft-prompt row's prompt slots are not input text."""
        slots = inputs.get("prompt_slots")
        if slots is not None:
            inputs = {**inputs, "input_ids": inputs["input_ids"][~slots].unsqueeze(0)}
        return super()._track_num_input_tokens(inputs)

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
        """The whole model state, written by the main process. Every process is here (``save_model``): under FSDP
        ``state_dict`` is the full state the Trainer gathered (``accelerator.get_state_dict``), else it is read here."""
        out = Path(output_dir or self.args.output_dir)
        state = drop_aliases(self.model, state_dict) if state_dict is not None else full_state(self.model)
        if is_main():
            out.mkdir(parents=True, exist_ok=True)
            write_state(state, out / STATE_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_state(model or self.model, Path(resume_from_checkpoint) / STATE_FILE)


