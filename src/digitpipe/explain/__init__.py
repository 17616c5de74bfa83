"""Explain: intermediate layer activations of chosen images, exported and drawn."""
