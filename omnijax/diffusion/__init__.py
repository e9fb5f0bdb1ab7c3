"""omnijax.diffusion."""
