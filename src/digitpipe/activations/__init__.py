"""The activations stage: intermediate layer outputs of chosen images, exported and drawn."""
