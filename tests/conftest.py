"""Test-wide setup: 8 host CPU devices for sharding tests, float32 matmuls, tiny presets."""

import os

# Must happen before jax is imported anywhere: sharding tests need 8 devices on one CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Parity tests compare against PyTorch float32: keep XLA's CPU matmuls at full precision.
jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def no_global_mesh_left_behind():
    """Every test must leave no mesh or axis rules installed: a leaked mesh makes later
    `nnx.eval_shape` calls and orbax restores in the same worker fail far from the cause."""
    from omnijax.models import partitioning

    rules = partitioning.get_rules()
    yield
    assert jax.sharding.get_abstract_mesh().empty, "test left a global mesh installed"
    assert partitioning.get_rules() == rules, "test left other axis rules installed"
