"""Training: the model zoo, its recipes, the in-memory data module and the Lightning run."""
