"""Workflows: setup -> fit -> save flows that compose the components; components never import them.

| module      | flow                                                                         |
|-------------|------------------------------------------------------------------------------|
| train.py    | ``retain train``: check inputs, load, one engine call per stage, write the run |
| compare.py  | ``retain compare``: train every method with one budget, evaluate, report     |
| evaluate.py | ``retain eval``: a run (prompt rule) or a model on a suite and its tuned task |
| continual.py| ``retain continual``: the tasks in order with a continual method, measured    |
| demo.py     | ``retain demo``: the built-in task through ``compare``                      |
"""
