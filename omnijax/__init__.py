"""omnijax: one photo + text/audio/pose -> a full-body talking and gesturing video, in JAX."""

__version__ = "0.1.0"
