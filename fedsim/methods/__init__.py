"""Federated methods, one module each, each registering itself with one call to
:func:`~fedsim.methods.base.register` beside its class. Importing this package (which any
import of a module in it does first) imports them all, so the registry is complete;
:mod:`~fedsim.methods.base` imports none of them.
"""

from fedsim.methods import caesar, droppeft, fedavg_full, fedlora, legend, pld, stld_fixed  # noqa: F401
