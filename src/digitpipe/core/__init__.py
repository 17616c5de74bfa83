"""The core every stage imports: errors, atomic outputs, configuration, artifact paths."""
