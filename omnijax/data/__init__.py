"""omnijax.data."""
