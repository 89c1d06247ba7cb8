"""PyTorch checkpoint -> Flax variables converters (need torch; never imported by drsf_jax)."""
