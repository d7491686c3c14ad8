"""Data-generating processes of the simulation studies."""
