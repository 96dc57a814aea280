"""Torch in, the input's type out: the array convention of the trajectory and MCMC diagnostics.

Each diagnostic takes a numpy array or a torch tensor with time on axis 0, computes in float64 torch
(vectorised over chains, on the input's device) and hands back the input's type.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["float64_tensor", "like_input"]


def float64_tensor(name: str, x, min_ndim: int, min_len: int = 2) -> tuple[torch.Tensor, bool]:
    """float64 torch view of x (numpy or torch) and whether to hand back numpy."""
    was_numpy = not isinstance(x, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(x)) if was_numpy else x.detach()
    if tensor.ndim < min_ndim:
        raise ValueError(f"{name} needs at least {min_ndim} dimensions (time first), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] < min_len:
        raise ValueError(f"{name} needs at least {min_len} records along axis 0, got {tensor.shape[0]}")
    return tensor.to(torch.float64), was_numpy


def like_input(tensor: torch.Tensor, as_numpy: bool):
    """The result as numpy (on the host) when the input was numpy, else the tensor itself."""
    return tensor.cpu().numpy() if as_numpy else tensor
