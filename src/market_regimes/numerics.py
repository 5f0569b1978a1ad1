"""Small numerical kernels shared by stages (no stage logic here)."""

from __future__ import annotations

import numpy as np


def linear_recursion(x: np.ndarray, beta: float, block: int = 32) -> np.ndarray:
    """``S_t = beta * S_{t-1} + x_t`` along axis 0 of a (T, A) array, with ``S_{-1} = 0``.

    Blocks of ``block`` rows are filtered at once by a lower-triangular matrix of powers of beta;
    the block totals carry over by the same recursion with ``beta**block`` (applied recursively),
    so there is no loop over rows, only log_block(T) levels. Row t uses rows <= t only.
    """
    T, A = x.shape
    pad = (-T) % block
    xp = np.concatenate([x, np.zeros((pad, A))]) if pad else x
    nb = xp.shape[0] // block
    i = np.arange(block)
    lag = i[:, None] - i[None, :]
    M = np.where(lag >= 0, beta ** np.clip(lag, 0, None), 0.0)  # (L, L)
    local = np.matmul(M, xp.reshape(nb, block, A))  # (nb, L, A): each block from a zero start
    if nb > 1:
        totals = linear_recursion(local[:, -1, :], beta**block, block)  # S at each block's last row
        local[1:] += (beta ** (i + 1))[None, :, None] * totals[:-1, None, :]
    return local.reshape(nb * block, A)[:T]
