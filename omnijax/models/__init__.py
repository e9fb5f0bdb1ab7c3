"""omnijax.models."""
