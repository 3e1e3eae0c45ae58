"""Log-space matrix product (temporary reference implementation; being replaced by the engine)."""

import torch


def logmatmul(x, y, *, chunk_size=None):
    """``out[..., n, k] = logsumexp_m(x[..., n, m] + y[..., m, k])``."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    return torch.logsumexp(x.unsqueeze(-1) + y.unsqueeze(-3), dim=-2)
