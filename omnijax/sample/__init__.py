"""omnijax.sample."""
