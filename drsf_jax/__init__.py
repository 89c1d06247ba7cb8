"""drsf-jax: adversarial de-identification of drivers in driver-facing video, in JAX."""

__version__ = "0.1.0"
