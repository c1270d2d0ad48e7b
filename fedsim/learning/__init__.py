"""What is learnt: the trainer interface and its two implementations.

:mod:`~fedsim.learning.base` (the ``Trainer`` protocol and the values it returns),
:mod:`~fedsim.learning.surrogate` (the analytic learning curve), :mod:`fedsim.learning.real`
(real PyTorch / peft LoRA training) and :mod:`~fedsim.learning.compression` (Caesar's
sparsification and quantisation with exact byte counts).
"""
