from pyro_contrast.ops.logmatmul import logmatmul

__all__ = ["logmatmul"]
