"""The simulated clock: a round's fate as data, the synchronous driver, and what a run leaves.

:mod:`~fedsim.engine.fate` (a round's outcomes and phase accounting, a pure function),
:mod:`~fedsim.engine.retries` (failed transfers), :mod:`~fedsim.engine.sync` (the SimPy
driver that consumes the fates: train, aggregate, evaluate, tell the method, record),
:mod:`~fedsim.engine.records`, :mod:`~fedsim.engine.rundir` and
:mod:`~fedsim.engine.checkpoint` (run folders that resume to the same bytes).
"""
