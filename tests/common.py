"""Shared test utilities."""

import torch


def assert_close(actual, expected, atol=1e-6, rtol=1e-6, msg=""):
    """Assert two tensors (or numbers) agree elementwise, comparing in float64."""
    # Python numbers become float64 directly: as_tensor would round them to float32 first.
    actual = _as_float64(actual)
    expected = _as_float64(expected)
    assert actual.shape == expected.shape, (
        f"shape {tuple(actual.shape)} != {tuple(expected.shape)} {msg}"
    )
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, equal_nan=True, msg=msg or None
    )


def _as_float64(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def fresh_bridge(bridge, **overrides):
    """A bridge built anew from the current state of ``bridge``'s parts (no cache)."""
    import pyro_contrast as pc

    settings = dict(
        target_bank=bridge.target_bank,
        marginal=bridge.marginal,
        chunk_size=bridge.chunk_size,
        progress=False,
    )
    return pc.Bridge(
        bridge.critics,
        [pc.Bank(views=b.materialize(), log_weights=b.log_weights) for b in bridge.banks],
        **(settings | overrides),
    )


def spy_fused(monkeypatch):
    """Record, per bank chunk, whether the streamed pass ran (True) or stepped aside."""
    from pyro_contrast.marginals import chain

    calls = []
    fused = chain.fused_partials

    def spy(*args, **kwargs):
        out = fused(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(chain, "fused_partials", spy)
    return calls
