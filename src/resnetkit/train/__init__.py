"""Training: recipes, the training loop, checkpoints."""
