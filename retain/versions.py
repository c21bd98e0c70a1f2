"""The package version and the versions of the libraries a run was made with (recorded in every result)."""

from __future__ import annotations

__version__ = "0.1.0"


def library_versions() -> dict:
    import platform

    import accelerate
    import peft
    import torch
    import transformers

    return {"retain": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}
