"""Mesh from config: -1 fill, errors, logical rules -> shardings, batch rows per process."""

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import train_toy
from omnijax.data import pipeline
from omnijax.models import partitioning
from omnijax.train import mesh as mesh_lib


def test_mesh_shape_fill_and_errors():
    assert partitioning.mesh_shape({"fsdp": -1}, 8) == (1, 8, 1, 1)
    assert partitioning.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 1, 2)
    with pytest.raises(ValueError, match="at most one"):
        partitioning.mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="cannot be split"):
        partitioning.mesh_shape({"fsdp": -1, "tensor": 3}, 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        partitioning.mesh_shape({"fsdp": 4}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        partitioning.mesh_shape({"model": 2}, 8)


def test_mesh_devices_picks_the_first_n_of_one_process():
    assert mesh_lib.config_devices({"devices": 0}) is None
    assert mesh_lib.config_devices({}) is None
    assert mesh_lib.config_devices({"devices": 2}) == jax.devices()[:2]
    with pytest.raises(ValueError, match="mesh.devices=9"):
        mesh_lib.config_devices({"devices": 9})


def test_mesh_axes_are_auto_and_ordered():
    mesh = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
    assert mesh.axis_names == ("data", "fsdp", "context", "tensor")
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert mesh_lib.data_parallel_size(mesh) == 4
    assert "fsdp=4" in mesh_lib.describe(mesh) and "tensor=2" in mesh_lib.describe(mesh)


def _abstract_toy():
    with nnx.use_eager_sharding(False):
        return nnx.state(nnx.eval_shape(lambda: train_toy.ToyNet(nnx.Rngs(0))))


def test_layout_change_is_a_rules_change():
    mesh = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
    state = _abstract_toy()
    default = mesh_lib.state_shardings(state, mesh, mesh_lib.rules_from_config(None))
    assert default["up"]["kernel"].get_raw_value().spec == P("fsdp", "tensor")
    assert default["up"]["bias"].get_raw_value().spec == P("tensor")
    # pure FSDP over all 8 devices (no tensor parallelism): change the rules only
    rules = mesh_lib.rules_from_config({"embed": ["fsdp", "tensor"], "mlp": None})
    fsdp = mesh_lib.state_shardings(state, mesh, rules)
    assert fsdp["up"]["kernel"].get_raw_value().spec == P(("fsdp", "tensor"), None)
    with pytest.raises(ValueError, match="not a mesh axis"):
        mesh_lib.rules_from_config({"embed": "model"})


def test_batch_sharding_follows_the_batch_rule():
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert partitioning.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)
    assert partitioning.batch_sharding(mesh, 0).spec == P()
    # size-1 axes drop out; the spec is the one the model's constrain(("batch", ...)) resolves to
    mesh4 = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
    assert partitioning.batch_sharding(mesh4, 2).spec == P("fsdp", None)
    assert partitioning.batch_sharding(mesh4, 2).spec == partitioning.spec_for(("batch", None), mesh=mesh4)
    # a config that also splits the batch over `tensor` changes the inputs' layout with it
    rules = mesh_lib.rules_from_config({"batch": ["data", "fsdp", "tensor"]})
    assert partitioning.batch_sharding(mesh, 1, rules).spec == P(("data", "fsdp", "tensor"))
    assert mesh_lib.data_parallel_size(mesh, rules) == 8


def test_batch_rows_cover_the_batch():
    mesh = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
    assert pipeline.local_rows(partitioning.batch_sharding(mesh, 1), 8) == (0, 8)   # one process
