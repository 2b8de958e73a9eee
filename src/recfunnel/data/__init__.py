"""Datasets: the synthetic Kuaishou-like world, RecFlow's real format, MovieLens, and the
sequential protocol that the retrieval chapters share."""
