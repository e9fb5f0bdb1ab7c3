"""omnijax.eval."""
