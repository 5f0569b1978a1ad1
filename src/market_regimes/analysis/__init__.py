"""Analyses off the main path (nothing imports them): asset groups and the market map, ...

Each analysis imports the stages it needs (data, regimes, ...) and has its own entry script.
"""
