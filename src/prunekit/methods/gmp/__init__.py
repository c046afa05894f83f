"""Gradual magnitude pruning (Zhu & Gupta 2017): prune while fine-tuning, sparsity rising on a schedule."""
