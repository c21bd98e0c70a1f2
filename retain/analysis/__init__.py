"""The analyses the ProMoT paper draws its conclusions from, as components: the format-specialization curve
over training steps (``curve``), the gradient cosine between the real task and its label-shuffled copy
(``gradients``), and each method's trade-off frontier over a sweep of a training option (``frontier``),
with the report of each (``report``). The commands that run them are ``retain analyze`` and
``retain compare --sweep`` (``retain.workflows.analyze``, ``retain.workflows.compare``)."""
