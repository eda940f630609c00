"""The contracts every component shares: the run config and the wire schema. Imports nothing of the project above it."""
