"""Magnitude pruning: zero the weights with the smallest |w| (L1) or w^2 (L2)."""
