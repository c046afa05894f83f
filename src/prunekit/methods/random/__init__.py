"""Random pruning: a seeded baseline that every real criterion must beat."""
