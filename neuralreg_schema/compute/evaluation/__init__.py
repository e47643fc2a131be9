"""Robustness: Gaussian noise, the adversarial attacks (specs, recipes, runs, scores, sparse attacks,
foolbox's PGD with a per-sample epsilon)."""
