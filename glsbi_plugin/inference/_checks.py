r"""Input validation shared by the builders and the grid posterior: θ, x and box priors.

sbi's own checks are either missing or surface late as assertion errors deep inside a network
(e.g. an unbatched image ``(C, H, W)`` is read by ``process_x`` as ``C`` i.i.d. trials of an
``(H, W)`` observation). These helpers fail early, with a ``ValueError`` that names the expected
shape or range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from .._validation import check_theta as check_theta

__all__ = ["as_batched_x", "box_bounds", "check_theta"]


def box_bounds(prior: Distribution) -> tuple[Tensor, Tensor]:
    """The finite box ``[low, high]`` that supports ``prior`` (e.g. an sbi ``BoxUniform``).

    Args:
        prior: A distribution over ``(d,)`` vectors whose support is a product of intervals.

    Returns:
        ``(low, high)``: float32 tensors of shape ``(d,)``.

    Raises:
        ValueError: If the support is not a finite box over a 1-D event.
    """
    try:
        support = prior.support
    except (AttributeError, NotImplementedError) as err:
        raise ValueError(f"the prior ({type(prior).__name__}) does not declare its support") from err
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    lower = getattr(support, "lower_bound", None)
    upper = getattr(support, "upper_bound", None)
    if lower is None or upper is None:
        raise ValueError(f"the prior's support must be a box (product of intervals), got {prior.support!r}")
    event_shape = tuple(prior.event_shape) or tuple(prior.sample().shape[-1:])
    if len(event_shape) != 1:
        raise ValueError(f"the prior must be over vectors θ of shape (d,), got event shape {event_shape}")
    low = torch.as_tensor(lower, dtype=torch.float32).detach().cpu().expand(event_shape).clone()
    high = torch.as_tensor(upper, dtype=torch.float32).detach().cpu().expand(event_shape).clone()
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
        raise ValueError(f"the prior's support must be a finite box with low < high, got low={low}, high={high}")
    return low, high


def as_batched_x(x: object, x_shape: Sequence[int]) -> Tensor:
    """Observations with a batch dimension: ``(C, H, W)`` → ``(1, C, H, W)``; ``(n, C, H, W)`` as is.

    sbi's ``process_x`` cannot tell an unbatched image from a batch (it only adds a dimension to
    1-D data), and ratio-based potentials then treat the ``C`` channels as ``C`` i.i.d. trials.

    Args:
        x: A tensor (or array) of shape ``x_shape`` or ``(n, *x_shape)``.
        x_shape: Event shape of one observation, e.g. ``(C, H, W)``.

    Returns:
        A float32 tensor of shape ``(n, *x_shape)``.

    Raises:
        ValueError: If ``x`` has another shape, is empty or holds NaN/inf.
    """
    x_shape = tuple(int(s) for s in x_shape)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape {x_shape} or (n, *{x_shape}), got {type(x).__name__}")
    if tuple(x.shape) == x_shape:
        x = x[None]
    if x.ndim != len(x_shape) + 1 or tuple(x.shape[1:]) != x_shape:
        raise ValueError(f"x must have shape {x_shape} or (n, *{x_shape}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x.detach().to(torch.float32)
