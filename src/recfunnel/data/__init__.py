"""Datasets: the synthetic Kuaishou-like world, RecFlow's real format, MovieLens."""
