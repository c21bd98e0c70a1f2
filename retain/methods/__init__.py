"""Fine-tuning methods: typed data (``registry``) and what their parts do to a model (``training``).

| module        | what                                                                  |
|---------------|-----------------------------------------------------------------------|
| registry.py   | ``Stage``, ``Method``, ``register``/``get``/``names``                 |
| standard.py   | full, prompt, lora                                                    |
| promot.py     | promot, joint                                                         |
| training.py   | ``wrap`` (attach a prompt/LoRA), ``prepare`` (which parameters train) |
| soft_prompt.py, lora.py | the PEFT parts                                              |

Adding a method: CONTRIBUTING.md ("A fine-tuning method"). The registry entries are the lines below.
"""

from retain.methods import promot, standard
from retain.methods.registry import Method, Stage, compare_names, get, names, register, unregister
from retain.methods.training import param_groups, prepare, trainable_state, wrap

# the registry entries of the built-in methods, in the order --help lists them
for _m in (standard.FULL, standard.PROMPT, standard.LORA, promot.PROMOT, promot.JOINT):
    register(_m)

__all__ = ["Method", "Stage", "compare_names", "get", "names", "param_groups", "prepare", "register", "trainable_state",
           "unregister", "wrap"]
