"""Validation shared by the sbi-facing simulator and the inference layer (torch side)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_theta(
    theta: object,
    low: Tensor | None = None,
    high: Tensor | None = None,
    *,
    dim: int | None = None,
    names: Sequence[str] | None = None,
) -> Tensor:
    """θ as an ``(n, d)`` float32 tensor, or a ``ValueError`` naming the expected shape/range.

    Args:
        theta: A floating tensor of shape ``(n, d)`` or ``(d,)``.
        low: Lower bounds ``(d,)`` of the support (inclusive); ``None`` skips the range check.
        high: Upper bounds ``(d,)`` of the support (inclusive).
        dim: Expected ``d`` when no bounds are given.
        names: Parameter names, used in error messages only.

    Returns:
        θ as a float32 tensor of shape ``(n, d)`` (a 1-D input gains a leading batch dimension).

    Raises:
        ValueError: ``theta`` is not a floating tensor, has the wrong shape, holds NaN/inf or lies
            outside ``[low, high]``.
    """
    d = int(low.numel()) if low is not None else dim
    expected = f"(n, {d})" if d is not None else "(n, d)"
    if not isinstance(theta, Tensor):
        raise ValueError(f"theta must be a torch.Tensor of shape {expected}, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating tensor (float32) of shape {expected}, got dtype {theta.dtype}")
    if theta.ndim == 1:
        theta = theta[None]
    if theta.ndim != 2 or (d is not None and theta.shape[1] != d):
        params = f" for parameters {tuple(names)}" if names is not None else ""
        raise ValueError(f"theta must have shape {expected}{params}, got {tuple(theta.shape)}")
    if not torch.isfinite(theta).all():
        raise ValueError("theta contains NaN or inf")
    theta = theta.detach().to(torch.float32)
    if low is not None and high is not None:
        lo, hi = low.to(theta.device), high.to(theta.device)
        outside = (theta < lo) | (theta > hi)
        if outside.any():
            row, col = (int(v) for v in outside.nonzero()[0])
            label = f" ({names[col]})" if names is not None else ""
            raise ValueError(
                f"theta[{row}, {col}] = {float(theta[row, col]):.6g}{label} is outside the prior support "
                f"[{float(low[col]):g}, {float(high[col]):g}]"
            )
    return theta
