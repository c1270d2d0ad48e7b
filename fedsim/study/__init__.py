"""Studies over runs: scenarios, running them, comparing and plotting their records.

:mod:`~fedsim.study.scenario` (validated scenario files and sweeps),
:mod:`~fedsim.study.simulate` (build everything from a scenario and run it),
:mod:`~fedsim.study.parallel` (independent runs side by side), :mod:`~fedsim.study.compare`
and :mod:`~fedsim.study.plot` (tables and figures from run records only).
"""
