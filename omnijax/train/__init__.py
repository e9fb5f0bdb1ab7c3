"""omnijax.train."""
