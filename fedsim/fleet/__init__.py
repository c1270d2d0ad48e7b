"""Devices and who is available when: profiles, distributions, the fleet as arrays.

:mod:`~fedsim.fleet.profiles` and :mod:`~fedsim.fleet.distributions` (device and network
classes from profile files), :mod:`~fedsim.fleet.fleet` (a fleet as a struct of numpy
arrays, sampled from a mix) and :mod:`~fedsim.fleet.availability`.
"""
