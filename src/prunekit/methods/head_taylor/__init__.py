"""`head_taylor`: attention-head pruning by Taylor importance (Michel et al. 2019), heads removed physically."""
