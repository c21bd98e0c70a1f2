"""Fine-tuning methods: typed data (``registry``) and what their parts do to a model (``training``).

| module        | what                                                                  |
|---------------|-----------------------------------------------------------------------|
| registry.py   | ``Stage``, ``Method``, ``register``/``get``/``names``                 |
| standard.py   | full, prompt, lora                                                    |
| promot.py     | promot, joint, ft-random-prompt, promot-lora                          |
| training.py   | ``wrap`` (attach a prompt/LoRA), ``prepare`` (which parameters train) |
| soft_prompt.py, lora.py | the PEFT parts                                              |
| posthoc.py    | wise-ft, lines: a model edited from base and a full run, no training  |

Adding a method: CONTRIBUTING.md ("A fine-tuning method"). The registry entries are the lines below.
"""

from retain.methods import promot, standard
from retain.methods.registry import Method, Stage, compare_names, get, names, register, unregister

_TRAINING = ("param_groups", "prepare", "trainable_state", "wrap")


def __getattr__(name: str):
    """``wrap``/``prepare``/... load ``training`` (torch, PEFT) on first use: the registry alone stays light,
    so that the CLI's --help, which lists the methods, starts instantly."""
    if name in _TRAINING:
        from retain.methods import training

        return getattr(training, name)
    raise AttributeError(f"module 'retain.methods' has no attribute {name!r}")


# the registry entries of the built-in methods, in the order --help lists them
for _m in (standard.FULL, standard.PROMPT, standard.LORA, promot.PROMOT, promot.JOINT, promot.FT_RANDOM_PROMPT,
           promot.PROMOT_LORA):
    register(_m)

__all__ = ["Method", "Stage", "compare_names", "get", "names", "param_groups", "prepare", "register", "trainable_state",
           "unregister", "wrap"]
