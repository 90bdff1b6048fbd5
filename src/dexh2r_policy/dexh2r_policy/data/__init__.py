"""Datasets: the real DexH2R layout (reader and writer) and the project's own episodes."""
