r"""The shortcut: compare A and C embeddings directly, without the intermediate modality.

Che & Eysenbach [1] prove that, under their assumptions, directly comparing the
representations of unpaired modalities recovers the likelihood ratio that integrating out
the intermediate modality gives. The :class:`~pyro_contrast.Bridge` offers the shortcut as
``method="direct"``, to be compared with the exact marginal (``method="exact"``), which
needs no such assumption.

**References**

1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
   Probabilistic Alignment of Unpaired Modalities*.
"""

from pyro_contrast.critics import Critic

__all__ = ["direct_log_ratio"]


def direct_log_ratio(hops, queries, candidates, temperature=None):
    """Scores of the queries against the candidates with the critics' shared similarity.

    :param hops: the chain's critics, hop by hop (a list of lists, as in ``Bridge``).
    :param queries: the A embeddings, one tensor per critic of the first hop (N, d).
    :param Tensor candidates: the C embeddings (K, d).
    :param float temperature: the shortcut's temperature (default: the first critic's).
    :returns: (N, K) scores, summed over the first hop's critics.

    >>> import torch
    >>> critic = Critic.from_embeddings("cosine", temperature=0.5)
    >>> u = torch.eye(2)
    >>> direct_log_ratio([[critic], [critic]], [u], u)
    tensor([[2., 0.],
            [0., 2.]])
    """
    first, last = hops[0], hops[-1][0]
    similarity = first[0].similarity
    if any(c.similarity != similarity for hop in hops for c in hop):
        raise ValueError("method='direct' needs all critics to share one similarity")
    if temperature is None:
        temperature = first[0].temperature.item()
    if similarity == "bilinear":
        if len(hops) != 2:
            raise ValueError("bilinear 'direct' is defined for three-modality chains only")
        weights = [c.weight @ last.weight for c in first]
        shortcut = Critic.from_embeddings("dot", temperature).pairwise_embeddings
        return sum(
            shortcut(u @ w.to(u.dtype), candidates) for u, w in zip(queries, weights, strict=True)
        )
    shortcut = Critic.from_embeddings(similarity, temperature)
    for u in queries:
        if u.shape[-1] != candidates.shape[-1]:
            raise ValueError(
                f"method='direct' compares A and C embeddings, but their dims differ "
                f"({u.shape[-1]} vs {candidates.shape[-1]})"
            )
    return sum(shortcut.pairwise_embeddings(u, candidates) for u in queries)
