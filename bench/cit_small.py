"""bench/cit.py with the small CPU budget of the first CIT measurements (docs/results/cit_small.md).

12 steps per task at batch 4, max length 128, the first 100 validation items per task, learning rates chosen so
that 12 steps change the model at all (1e-3 for LoRA adapters, 1e-4 for full fine-tuning and OSF), and by default
the four methods measured then (switchcit, sequential, replay, multitask). Everything else, resuming, skipping
and the documents included, is bench/cit.py's; its flags work here too (``--methods``, ``--aggregate-only``, ...).
Outputs: runs/cit_small/<method>/, docs/results/cit_small.md, cit_small.json, cit_small_*.png, cit_small/<method>/.

    python bench/cit_small.py                       # about 2.5 h on 2 shared CPU cores (OMP_NUM_THREADS=1)
    python bench/cit_small.py --aggregate-only      # rebuild docs/results from runs/cit_small
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cit

SMALL = {"name": "cit_small", "max_steps": 12, "batch_size": 4, "max_length": 128, "eval_samples": 100,
         "methods": ["switchcit", "sequential", "replay", "multitask"],
         "lr": {"switchcit": "1e-3", "sequential-lora": "1e-3", "arrow": "1e-3", "sequential": "1e-4", "replay": "1e-4",
                "multitask": "1e-4", "osf": "1e-4"}}

if __name__ == "__main__":
    cit.main(budget=SMALL)
