"""Model stage: window encoders/decoder (plain modules) and the training LightningModule.

``RegimeAutoencoder`` (which needs Lightning) is imported on first use, so inference can load
the plain encoder without paying for the Lightning import.
"""

from market_regimes.model.networks import (ConvDecoder, ConvEncoder, GRUEncoder, TransformerEncoder, encode,
                                          make_encoder)

__all__ = ["RegimeAutoencoder", "encode", "ConvDecoder", "ConvEncoder", "GRUEncoder", "TransformerEncoder", "make_encoder"]


def __getattr__(name):
    if name == "RegimeAutoencoder":
        from market_regimes.model import module

        return getattr(module, name)
    raise AttributeError(name)
