"""The one evaluation engine: batched generation, metrics, task scoring."""

from retain.evaluation.decoding import generate_texts
from retain.evaluation.metrics import METRICS, normalize, score

__all__ = ["METRICS", "generate_texts", "normalize", "score"]
