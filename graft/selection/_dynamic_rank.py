"""Gradient-aware dynamic rank: how many of the greedy picks a batch needs.

Given per-sample gradient embeddings ``G`` (B, D) of a batch, their mean
``g``, and an order of the samples (the Fast MaxVol picks), the subset made of
the first ``k`` picks approximates the batch gradient by the least-squares
combination ``G_S^T w_k``. Its relative residual

    e_k = min_w ||G_S^T w - g|| / ||g||,  S = the first k picks,

is non-increasing in ``k``. It comes from an orthonormal basis of the picked
gradients grown one vector at a time (Gram-Schmidt twice, O(D k) per step).
GRAFT keeps the smallest ``k`` with ``e_k <= eps`` inside the budget.

All functions are pure and take torch tensors.
"""

from __future__ import annotations

import torch

__all__ = ["choose_rank", "prefix_residuals", "subset_weights"]


def prefix_residuals(G, order):
    """Relative residuals ``e_1 .. e_K`` of the nested prefixes of ``order``.

    Parameters
    ----------
    G : Tensor of shape (B, D)
        Per-sample gradient embeddings.
    order : sequence of int of length K
        Sample indices in pick order.

    Returns
    -------
    Tensor of shape (K,)
        Non-increasing; ``e_k`` for the first ``k`` picks. A pick whose
        gradient is already in the span of the earlier ones leaves the
        residual unchanged.

    Notes
    -----
    One QR factorisation of the picked gradients in pick order, ``Q R``:
    the first ``k`` columns of ``Q`` span the first ``k`` picks, so
    ``e_k^2 = (||g||^2 - sum_{j<=k} (q_j . g)^2) / ||g||^2``. When a pick is
    (numerically) in the span of earlier ones that identity fails, and the
    residuals come from Gram-Schmidt one pick at a time instead.
    """
    g = G.mean(dim=0)
    norm2 = float(g @ g)
    K = len(order)
    if norm2 == 0 or K == 0:
        return torch.zeros(K, dtype=G.dtype, device=G.device)
    S = G[torch.as_tensor(list(order), device=G.device)]
    tiny = 1e-10 * torch.linalg.vector_norm(S, dim=1).max()
    if K <= G.shape[1]:
        Q, R = torch.linalg.qr(S.T)
        if bool((torch.diagonal(R).abs() > tiny).all()):
            captured = torch.cumsum((Q.T @ g) ** 2, dim=0)
            return torch.sqrt(torch.clamp(norm2 - captured, min=0.0) / norm2)
    return _prefix_residuals_stepwise(S, g, tiny)


def _prefix_residuals_stepwise(S, g, tiny):
    """Gram-Schmidt (twice) one pick at a time; dependent picks add nothing."""
    basis = []
    residual = g.clone()
    out = torch.empty(len(S), dtype=S.dtype, device=S.device)
    for k, v in enumerate(S):
        for _ in range(2):
            for q in basis:
                v = v - (q @ v) * q
        length = torch.linalg.vector_norm(v)
        if length > tiny:
            q = v / length
            basis.append(q)
            residual = residual - (q @ residual) * q
        out[k] = torch.linalg.vector_norm(residual) / torch.linalg.vector_norm(g)
    return out


def choose_rank(residuals, eps, k_min, k_max):
    """The smallest ``k`` in ``[k_min, k_max]`` with ``e_k <= eps`` (else ``k_max``).

    ``residuals[k - 1]`` is ``e_k``.
    """
    k_min = max(1, min(k_min, k_max))
    for k in range(k_min, k_max + 1):
        if residuals[k - 1] <= eps:
            return k
    return k_max


def subset_weights(G, rows):
    """Non-negative weights ``w`` with ``G[rows]^T w ~ mean(G)``, mean 1.

    The least-squares combination is clipped at zero (a negative weight would
    ascend that sample's loss) and rescaled so that the weights average 1,
    which keeps the weighted loss on the scale of a plain mean.
    """
    rows = torch.as_tensor(list(rows), device=G.device)
    g = G.mean(dim=0)
    w = torch.linalg.lstsq(G[rows].T, g[:, None]).solution[:, 0]
    w = w.clamp(min=0)
    total = w.sum()
    if total <= 0:
        return torch.ones(len(rows), dtype=G.dtype, device=G.device)
    return w * (len(rows) / total)
