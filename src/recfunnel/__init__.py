"""recfunnel: the package behind the course "The Recommendation Funnel".

Ten industrial recommender systems published by Kuaishou, rebuilt in PyTorch. The
chapters of the book explain and call this package; the package computes.

Modules: ``runtime`` (seeds, devices, environment report), ``profiles`` (run sizes),
``train`` (one training loop), ``metrics``, ``retrieval`` (nearest neighbours),
``plots`` and ``notebook`` (helpers for the chapters), and ``models``.
"""

__version__ = "0.1.0"
