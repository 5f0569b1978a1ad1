"""Encoders and decoder as plain ``nn.Module``s: (B, W, F) window -> (B, D) latent -> (B, W, F)."""

from __future__ import annotations

import torch
from torch import nn

CPU_ENCODE_BATCH = 256
"""Windows per forward pass when encoding on a CPU. The conv encoder's cost per window on 2 AMD
EPYC cores (hidden 32, 48-bar windows, 2 threads) on a quiet host: 29-31 us in passes of 256-512,
45-48 us in passes of 2,048, ~105 us in passes of 8,192, whose activations no longer stay in
cache. While the hypervisor took 10-19 % of the CPU time, larger passes did better (88 us at 256,
64 us at 2,048; docs/PERFORMANCE.md, section 2), presumably because fewer passes mean fewer
thread synchronisations to lose."""


def encode_batch_size(device: torch.device | str) -> int:
    """Windows per forward pass for :func:`encode`: small on a CPU (cache), large on a GPU."""
    return CPU_ENCODE_BATCH if torch.device(device).type == "cpu" else 4096


@torch.no_grad()
def encode(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Latents of many windows in eval mode, ``batch_size`` windows per forward pass (default
    :func:`encode_batch_size` of ``x``'s device)."""
    model.eval()
    step = int(batch_size or encode_batch_size(x.device))
    return torch.cat([model(x[i : i + step]) for i in range(0, len(x), step)]) if len(x) else torch.zeros(0)


def flatten_windows(x: torch.Tensor) -> torch.Tensor:
    """Market-mode windows (B, A, W, F) -> (B, W, A*F); per-asset (B, W, F) unchanged."""
    if x.dim() == 4:
        b, a, w, f = x.shape
        return x.permute(0, 2, 1, 3).reshape(b, w, a * f)
    return x


class ResidualConvBlock(nn.Module):
    """Two dilated 1-D convolutions with a residual connection; keeps the length W.

    ``norm="group"``: GroupNorm over all channels and steps of each window, which removes the
    window's own level and scale; ``"batch"``: BatchNorm (batch statistics in training, running
    ones in eval), which keeps each window's level relative to the others; ``"none"``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float, norm: str = "group"):
        super().__init__()
        pad = (kernel_size - 1) * dilation // 2
        self.net = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation),
        )
        if norm == "group":
            self.norm = nn.GroupNorm(1, channels)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(channels)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            from market_regimes.errors import ConfigError

            raise ConfigError(f"unknown model.encoder_kwargs.norm={norm!r}; use group, batch or none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, W)
        return torch.nn.functional.gelu(self.norm(x + self.net(x)))


class ConvEncoder(nn.Module):
    """TCN-style encoder: dilated residual convolutions, then mean- and last-step pooling.

    ``input_skip``: the window's scaled inputs at its last step and their mean over the window
    also enter the output layer, so the latent sees the levels of the features (the volatility
    level is most of what separates regimes) next to what the convolutions make of their path."""

    def __init__(self, n_features: int, latent_dim: int, hidden: int = 64, n_layers: int = 3,
                 kernel_size: int = 3, dropout: float = 0.1, norm: str = "group", input_skip: bool = False):
        super().__init__()
        self.input_skip = bool(input_skip)
        self.inp = nn.Conv1d(n_features, hidden, 1)
        self.blocks = nn.Sequential(*[ResidualConvBlock(hidden, kernel_size, 2**i, dropout, norm) for i in range(n_layers)])
        self.out = nn.Linear(2 * hidden + (2 * n_features if self.input_skip else 0), latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(x.transpose(1, 2)))  # (B, H, W)
        pooled = [h.mean(dim=2), h[:, :, -1]] + ([x.mean(dim=1), x[:, -1]] if self.input_skip else [])
        return self.out(torch.cat(pooled, dim=1))  # (B, D)


class GRUEncoder(nn.Module):
    """Recurrent encoder: the last hidden state of a (multi-layer) GRU."""

    def __init__(self, n_features: int, latent_dim: int, hidden: int = 64, n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.out = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)  # h: (layers, B, H)
        return self.out(h[-1])


class TransformerEncoder(nn.Module):
    """Self-attention encoder with learned positions, mean-pooled over the window."""

    def __init__(self, n_features: int, latent_dim: int, window: int, hidden: int = 64, n_layers: int = 2,
                 n_heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Linear(n_features, hidden)
        self.pos = nn.Parameter(torch.zeros(1, window, hidden))
        layer = nn.TransformerEncoderLayer(hidden, n_heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.inp(x) + self.pos[:, : x.shape[1]])  # (B, W, H)
        return self.out(h.mean(dim=1))


class ConvDecoder(nn.Module):
    """Latent -> (B, W, F): a learned per-step expansion refined by convolutions."""

    def __init__(self, n_features: int, latent_dim: int, window: int, hidden: int = 64):
        super().__init__()
        self.window, self.hidden = window, hidden
        self.expand = nn.Linear(latent_dim, hidden * window)
        self.net = nn.Sequential(
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(hidden, n_features, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.expand(z).view(-1, self.hidden, self.window)  # (B, H, W)
        return self.net(h).transpose(1, 2)  # (B, W, F)


class FeatureEmbedding(nn.Module):
    """The feature-only path: no training, the latent is hand-made from the scaled window.

    ``pool="last"``: the window's last bar (the features at the end bar, a causal snapshot);
    ``"mean"``: the mean over the window; ``"last_mean"``: both, concatenated. ``columns`` picks
    input columns (indices into the flattened ``A*F`` or ``F`` axis; None: all). Same call
    signature as the trained encoders, so clustering, bundles and inference treat it alike.
    """

    def __init__(self, n_features: int, window: int, encoder: str = "features", columns: list[int] | None = None,
                 pool: str = "last", **_ignored):
        super().__init__()
        if pool not in ("last", "mean", "last_mean"):
            from market_regimes.errors import ConfigError

            raise ConfigError(f"unknown model.pool={pool!r}; use last, mean or last_mean")
        cols = list(range(n_features)) if columns is None else [int(c) for c in columns]
        self.hparams = {"n_features": int(n_features), "window": int(window), "encoder": "features",
                        "columns": cols, "pool": pool}
        self.register_buffer("columns", torch.tensor(cols, dtype=torch.long))
        self.pool = pool
        self.latent_dim = len(cols) * (2 if pool == "last_mean" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = flatten_windows(x)[..., self.columns]  # (B, W, C)
        if self.pool == "last":
            return x[:, -1]
        if self.pool == "mean":
            return x.mean(dim=1)
        return torch.cat([x[:, -1], x.mean(dim=1)], dim=1)


def make_encoder(name: str, n_features: int, latent_dim: int, window: int, **kwargs) -> nn.Module:
    """Encoder by name: conv (default), gru or transformer."""
    if name == "conv":
        return ConvEncoder(n_features, latent_dim, **kwargs)
    if name == "gru":
        return GRUEncoder(n_features, latent_dim, **kwargs)
    if name == "transformer":
        return TransformerEncoder(n_features, latent_dim, window, **kwargs)
    from market_regimes.errors import ConfigError

    raise ConfigError(f"unknown model.encoder={name!r}; use conv, gru or transformer")
