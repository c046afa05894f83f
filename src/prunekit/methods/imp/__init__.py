"""Lottery tickets: iterative magnitude pruning with rewinding and the random re-initialization control."""
