"""Continual instruction tuning: SwitchCIT and the usual baselines.

| file          | what                                                               |
|---------------|--------------------------------------------------------------------|
| config.py     | ``ContinualConfig``: every flag of ``retain continual``            |
| tasks.py      | task folders (train/validation JSONL), per-task metric config      |
| switch.py     | the switch: feature model -> Linear-ReLU-Linear, stored instructions |
| generation.py | greedy generation with one LoRA adapter per row (one pass)         |
| registry.py   | a SwitchCIT registry on disk: base reference, adapters, switch     |
| methods.py    | ``ContinualMethod`` registry (light: read by ``--help``)           |
| context.py    | what a method is given: ``Context``, ``Previous``, generation length |
| baselines.py  | sequential, sequential-lora, replay, multitask (``run_baseline``)  |
| switchcit.py  | SwitchCIT: a new adapter per task, the switch retrained after each |
| measure.py    | R[i][j], Last, Avg, BWT, FWT, forgetting, routing accuracy         |
| general.py    | the switch's general class (pool), general-suite scoring, delta    |
| report.py     | results.json, results.md, heatmap and line plot                    |

Every method trains through ``retain.engine.run_stage``; the flow around them (checks, staging,
results, registry) is ``retain.workflows.continual``.
"""
