"""Numerical kernels: the stable log-space matrix product and log-Bessel functions.

The lowest layer: it imports only ``torch`` and knows nothing of critics, Pyro or studies.
"""

from pyro_contrast.ops.bessel import bessel_ratio, log_hyp0f1_sphere, log_iv
from pyro_contrast.ops.logmatmul import logmatmul
from pyro_contrast.ops.streaming import LogMatMulStream

__all__ = ["LogMatMulStream", "bessel_ratio", "log_hyp0f1_sphere", "log_iv", "logmatmul"]
