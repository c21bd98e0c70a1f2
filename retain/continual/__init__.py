"""Continual instruction tuning: SwitchCIT and the usual baselines.

| file          | what                                                               |
|---------------|--------------------------------------------------------------------|
| config.py     | ``ContinualConfig``: every flag of ``retain continual``            |
| tasks.py      | task folders (train/validation JSONL), per-task metric config      |
| switch.py     | the switch: feature model -> Linear-ReLU-Linear, stored instructions |
| generation.py | greedy generation with one LoRA adapter per row (one pass)         |
| registry.py   | a SwitchCIT registry on disk: base reference, adapters, switch     |
| methods.py    | switchcit, sequential, sequential-lora, replay, multitask          |
| measure.py    | R[i][j], average, BWT, forgetting, routing accuracy                |
| report.py     | results.json, results.md, heatmap and line plot                    |

Every method trains through ``retain.engine.run_stage``.
"""
