"""Wanda: prune by |W| * input-feature norm, per output row, block by block on calibration activations."""
