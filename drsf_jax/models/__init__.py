"""Flax ports of the victim models (one module per family)."""
