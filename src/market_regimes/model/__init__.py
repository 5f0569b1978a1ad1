"""Model stage: window encoders/decoder (plain modules) and the training LightningModule."""

from market_regimes.model.module import RegimeAutoencoder, encode
from market_regimes.model.networks import ConvDecoder, ConvEncoder, GRUEncoder, TransformerEncoder, make_encoder

__all__ = ["RegimeAutoencoder", "encode", "ConvDecoder", "ConvEncoder", "GRUEncoder", "TransformerEncoder", "make_encoder"]
