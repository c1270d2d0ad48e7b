"""The bottom layer: what every other part builds on, importing nothing above it.

:mod:`~fedsim.core.plan` (a client's plan), :mod:`~fedsim.core.costmodel` (its FLOPs,
memory, bytes, energy and time: pure functions), :mod:`~fedsim.core.rng` (named, round-keyed
seed streams), :mod:`~fedsim.core.errors`, :mod:`~fedsim.core.configio` (YAML loading,
validation, overrides) and :mod:`~fedsim.core.models` (a model's architecture from its
``config.json``).
"""
