"""The LightningModule: an encoder/decoder pair trained with weighted objectives.

Objectives (each weighted in config, so ablations are sweeps):
- ``w_recon``: reconstruct the window from its latent (MSE);
- ``w_masked``: hide a random ``mask_ratio`` of the time steps and reconstruct them (MSE on the
  hidden steps only);
- ``w_temporal``: a temporal-neighbourhood objective on latents. A window's positive is a window
  ending a little earlier (see ``WindowDataset``). ``temporal_loss="vicreg"`` (default) pulls the
  pair together while keeping the latent spread out and decorrelated; ``"infonce"`` also pushes
  the other windows of the batch away. Both favour slowly varying, regime-like latents.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from market_regimes.model.networks import ConvDecoder, flatten_windows, make_encoder


class RegimeAutoencoder(L.LightningModule):
    def __init__(self, n_features: int, window: int, encoder: str = "conv", latent_dim: int = 16,
                 hidden: int = 64, n_layers: int = 3, dropout: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 1e-4, w_recon: float = 1.0, w_masked: float = 0.5,
                 mask_ratio: float = 0.25, w_temporal: float = 0.5, temporal_loss: str = "vicreg",
                 temperature: float = 0.2, encoder_kwargs: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = make_encoder(encoder, n_features, latent_dim, window, hidden=hidden, n_layers=n_layers,
                                    dropout=dropout, **(encoder_kwargs or {}))
        self.decoder = ConvDecoder(n_features, latent_dim, window, hidden)

    _flat = staticmethod(flatten_windows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Window(s) -> latent (B, D)."""
        return self.encoder(self._flat(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.forward(x))

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x = self._flat(batch["x"])
        z = self.encoder(x)
        out = {"recon": F.mse_loss(self.decoder(z), x)}
        if hp.w_masked > 0:
            hidden = torch.rand(x.shape[0], x.shape[1], 1, device=x.device) < hp.mask_ratio  # (B, W, 1)
            recon = self.decoder(self.encoder(x.masked_fill(hidden, 0.0)))
            err = ((recon - x) ** 2).mean(dim=2, keepdim=True)
            out["masked"] = (err * hidden).sum() / hidden.sum().clamp(min=1)
        if hp.w_temporal > 0 and "x_pos" in batch:
            z_pos = self.encoder(self._flat(batch["x_pos"]))
            if hp.temporal_loss == "infonce":
                out["temporal"] = info_nce(z, z_pos, hp.temperature)
            else:
                out["temporal"] = vicreg(z, z_pos)
        weights = {"recon": hp.w_recon, "masked": hp.w_masked, "temporal": hp.w_temporal}
        out["loss"] = sum(weights[k] * v for k, v in out.items())
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=False, on_step=False, on_epoch=True,
                      batch_size=len(batch["x"]))
        self.log("loss", out["loss"], prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, prog_bar=False, on_epoch=True,
                      batch_size=len(batch["x"]), sync_dist=True)
        self.log("val_loss", out["loss"], prog_bar=True, on_epoch=True, batch_size=len(batch["x"]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def info_nce(z: torch.Tensor, z_pos: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: each row's positive is the same row of ``z_pos``, the batch the negatives."""
    logits = F.normalize(z, dim=1) @ F.normalize(z_pos, dim=1).T / temperature  # (B, B)
    target = torch.arange(len(z), device=z.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def vicreg(z: torch.Tensor, z_pos: torch.Tensor, inv: float = 25.0, var: float = 25.0, cov: float = 1.0) -> torch.Tensor:
    """Variance-invariance-covariance (Bardes et al., 2022) on (B, D) latent pairs.

    Invariance pulls a window and its temporal neighbour together; the variance hinge keeps every
    latent dimension's batch std near 1 and the covariance term decorrelates dimensions, so the
    latent cannot collapse. Unlike InfoNCE, windows of the same regime are not pushed apart, so
    regimes stay dense clusters. Weights are the paper's defaults.
    """
    d = z.shape[1]
    loss = inv * F.mse_loss(z, z_pos)
    for v in (z, z_pos):
        std = torch.sqrt(v.var(dim=0) + 1e-4)
        loss = loss + var * F.relu(1.0 - std).mean()
        c = torch.cov(v.T)
        loss = loss + cov * (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
    return loss / (inv + var + cov)
