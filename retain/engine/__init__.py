"""The one training engine: a ``transformers.Trainer`` run per stage.

Every method trains through ``run_stage``; what a stage trains is decided only
by ``requires_grad`` (see ``retain.methods.prepare``). Under
``accelerate launch`` the Trainer runs data-parallel (DDP over gloo on CPU).

| module         | what                                                                        |
|----------------|-----------------------------------------------------------------------------|
| stage.py       | ``run_stage``: arguments, optimizer groups, the run, the stage's record     |
| trainer.py     | ``StageTrainer``: loss on output tokens, whole-state checkpoints, clean stops |
| callbacks.py   | best checkpoint by the tuned-task metric, JSONL log, the checkpoint veto    |
| checkpoints.py | whole-model safetensors checkpoints; the newest complete one (``--resume``) |
| interrupt.py   | Ctrl-C: checkpoint and stop, exit code 130                                  |
| packing.py     | padding-free batches, used where a per-model check shows they are exact     |
| prompt_packing.py | padding-free soft-prompt batches: each example keeps its prompt, positions and attention |

Checkpoints hold the *whole* model state (``Trainer._save`` on a PeftModel would
save only the adapter, losing stage-2 weights), so ``--resume`` continues exactly
where a killed run stopped; a NaN/inf loss stops the stage cleanly.
"""

from retain.engine.checkpoints import STATE_FILE, last_checkpoint, load_state, save_state
from retain.engine.interrupt import Interrupted
from retain.engine.packing import packing_is_exact, virtual_tokens
from retain.engine.stage import check_precision, run_stage
from retain.engine.trainer import StageTrainer

__all__ = [
           "STATE_FILE",
           "Interrupted",
           "StageTrainer",
           "check_precision",
           "last_checkpoint",
           "load_state",
           "packing_is_exact",
           "run_stage",
           "save_state",
           "virtual_tokens",
]
