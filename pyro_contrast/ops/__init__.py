from pyro_contrast.ops.bessel import bessel_ratio, log_hyp0f1_sphere, log_iv
from pyro_contrast.ops.logmatmul import logmatmul

__all__ = ["bessel_ratio", "log_hyp0f1_sphere", "log_iv", "logmatmul"]
