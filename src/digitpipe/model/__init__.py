"""The model shared by train, evaluate, explain and predict: the zoo, its files, inference."""
