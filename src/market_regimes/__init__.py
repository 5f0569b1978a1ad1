"""Unsupervised discovery of market regimes in multi-asset crypto data."""

__version__ = "0.1.0"
