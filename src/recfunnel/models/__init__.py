"""One module per system, plus ``baselines`` (the references several chapters share)."""
