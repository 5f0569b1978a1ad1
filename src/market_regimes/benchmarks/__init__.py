"""Benchmarks: measured performance and scale of the project's stages (not on the main path)."""
