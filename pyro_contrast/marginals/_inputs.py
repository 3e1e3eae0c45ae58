"""A bridge's queries and candidates, encoded by the critics at the ends of its chain and
checked for shape (a clear error names the argument)."""


def encode_queries(left, a):
    """The queries ``a`` (a tensor, or one per critic of a fusion hub) as the first hop's
    critics embed them: a list of (N, d) tensors with one N."""
    if len(left) > 1:
        if not isinstance(a, (list, tuple)) or len(a) != len(left):
            raise ValueError(
                f"this bridge fuses {len(left)} modalities: pass a tuple of "
                f"{len(left)} query tensors"
            )
    else:
        a = (a,)
    encoded = []
    for j, (critic, x) in enumerate(zip(left, a, strict=True)):
        u = critic.encode_x(x)
        if u.dim() != 2 or u.shape[0] == 0:
            raise ValueError(
                f"a[{j}] must be a non-empty batch of queries, encoded to "
                f"(N, d); got {tuple(u.shape)}"
            )
        encoded.append(u)
    if len({u.shape[0] for u in encoded}) > 1:
        raise ValueError("fused query tensors have different numbers of rows")
    return encoded


def encode_candidates(last, c):
    """The candidates ``c`` as the last critic embeds them, (K, d)."""
    v = last.encode_y(c)
    if v.dim() != 2 or v.shape[0] == 0:
        raise ValueError(
            f"c must be a non-empty batch of candidates, encoded to (K, d); got {tuple(v.shape)}"
        )
    return v
