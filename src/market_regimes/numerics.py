"""Small numerical kernels shared by stages (no stage logic here)."""

from __future__ import annotations

import numpy as np

TRANSPOSE_BLOCK = 512  # time steps per block of a transposed copy: 512 x 500 assets x 8 B = 2 MB


def transpose_into(dst: np.ndarray, src: np.ndarray, along: int = 0, columns: np.ndarray | None = None,
                   block: int = TRANSPOSE_BLOCK) -> np.ndarray:
    """``dst[...] = src[:, columns].T`` for 2-D arrays, ``block`` steps of src's axis ``along``
    (the time axis) at a time: a whole-array transposed copy of hundreds of assets misses the
    cache on every element and grows faster than the data. ``columns`` (optional, with
    ``along=0``) picks and orders src's columns per block, without a full reordered copy."""
    if along not in (0, 1) or (columns is not None and along != 0):
        raise ValueError("transpose_into: along must be 0 or 1, and columns needs along=0")
    for t in range(0, src.shape[along], block):
        if along == 0:
            part = src[t : t + block] if columns is None else src[t : t + block][:, columns]
            dst[:, t : t + block] = part.T
        else:
            dst[t : t + block] = src[:, t : t + block].T
    return dst


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
