"""`launch/local.sh 2 ...`: two processes over 127.0.0.1 (gloo) train like one process, and
read preprocessed shards so that devices holding the same batch rows hold the same records."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import train_toy
from omnijax.train import checkpoint as ckpt_lib
from omnijax.train import trainer

REPO = Path(__file__).resolve().parents[1]
TESTS = str(Path(__file__).resolve().parent)


def _losses(workdir: Path) -> list[float]:
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def _params(workdir: Path):
    cfg = train_toy.toy_config()
    su = trainer.setup(cfg)       # restored onto this process's 8-device mesh
    ck = ckpt_lib.Checkpointer(workdir / "checkpoints")
    state = ck.restore(ck.latest_step(), su.target.as_dict())
    ck.close()
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["params"]))], state


def test_two_processes_match_one(tmp_path):
    cfg_file = train_toy.write_config_file(tmp_path / "toy_cfg.py", TESTS)
    args = ["--config.train.steps=6", "--config.checkpoint.every=3"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, str(REPO)]), PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)

    two = tmp_path / "two"
    subprocess.run(["bash", str(REPO / "launch/local.sh"), "2", cfg_file, f"--workdir={two}", *args],
                   env=dict(env, DEVICES_PER_PROCESS="2"), check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "omnijax.train", f"--config={cfg_file}", f"--workdir={one}",
                    "--distributed=off", *args],
                   env=dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # only process 0 wrote logs (_losses checks each step appears once); each process
    # saved its own data-iterator state
    data_files = sorted(p.name for p in (two / "checkpoints" / "6" / "data").iterdir() if p.suffix == ".json")
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]

    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)
    p2, s2 = _params(two)
    p1, s1 = _params(one)
    assert int(s2["step"]) == int(s1["step"]) == 6
    for a, b in zip(p2, p1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- shards across processes

# Run by each of 2 processes with launch/local.sh's environment. It builds the trainer's own
# data path (objective.make_data on the mesh, pipeline.to_global) over preprocessed shards
# and writes, per step, a fingerprint of every batch row each of its devices holds.
_WORKER = """
import hashlib, json, os, sys
sys.path.insert(0, {configs!r})
from omnijax.train.main import init_distributed
init_distributed("env")
import jax, numpy as np
import omnihuman
from omnijax.data import pipeline
from omnijax.models import partitioning
from omnijax.train import objectives

data_dir, out_dir, axis = sys.argv[1:4]
cfg = omnihuman.get_config("size=tiny,stage=3,data=shards")
cfg.data.path, cfg.data.bucket = data_dir, "9x64x64"
cfg.mesh.shape = {{**dict(data=1, fsdp=1, context=1, tensor=1), axis: 2}}
cfg.train.batch_size = 4
mesh = partitioning.make_mesh(dict(cfg.mesh.shape))
objective = objectives.build(cfg)
data = objective.make_data(cfg, mesh)
steps = []
for _ in range(3):
    latents = pipeline.to_global(next(data), mesh)["latents"]
    rows = {{}}
    for shard in latents.addressable_shards:
        lo = shard.index[0].start or 0
        for r, row in enumerate(np.asarray(shard.data)):
            rows.setdefault(lo + r, []).append(hashlib.sha1(row.tobytes()).hexdigest()[:16])
    steps.append(rows)
with open(os.path.join(out_dir, f"p{{jax.process_index()}}.json"), "w") as f:
    json.dump(steps, f)
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """2 SynthTalk clips preprocessed into the tiny MMDiT's bucket: 10 records of 9x64x64."""
    from data_helpers import synth_set, tiny_vae_dir
    from omnijax.data import preprocess

    root = tmp_path_factory.getbasetemp()
    clips = synth_set(root, "mh_set", clips=2, seed=3, out_of_sync=0.0, occluded=0.0, missing=0.0)
    out = str(tmp_path_factory.mktemp("mh_shards"))
    m = preprocess.run(os.path.join(clips, "clips"), out,
                       preprocess.PreprocessConfig(buckets=("9x64x64",), vae=tiny_vae_dir(root)), progress=False)
    assert m["records"] == 10
    return out


def _two_processes(tmp_path: Path, data_dir: str, axis: str) -> list[list[dict]]:
    """The worker on 2 processes x 1 CPU device, joined like launch/local.sh joins them."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(configs=str(REPO / "configs")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, str(REPO)]), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    procs = [subprocess.Popen([sys.executable, str(script), data_dir, str(tmp_path), axis], cwd=REPO,
                              env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=300)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError("worker failed:\n" + "\n".join(e[-3000:] for e in errs))
    return [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]


# "tensor": both processes hold batch rows [0, 4); before the shards input (train.inputs) passed its block
# of rows as the record shard, each read records by jax.process_index() and a global row held
# different data on different devices (wrong gradients, nothing raised).
@pytest.mark.parametrize("axis", ["data", "tensor"])
def test_devices_holding_the_same_rows_read_the_same_records(shards, tmp_path, axis):
    per_process = _two_processes(tmp_path, shards, axis)
    for step in range(3):
        held = {}  # global row -> fingerprints of that row on every device holding it
        for proc in per_process:
            for row, prints in proc[step].items():
                held.setdefault(int(row), set()).update(prints)
        assert sorted(held) == [0, 1, 2, 3]
        differ = {row: sorted(p) for row, p in held.items() if len(p) > 1}
        assert not differ, f"step {step}: devices holding the same batch row hold different records: {differ}"
    if axis == "data":  # rows split over the processes: each reads its own records
        p0 = {f for prints in per_process[0][0].values() for f in prints}
        p1 = {f for prints in per_process[1][0].values() for f in prints}
        assert p0 and p1 and not p0 & p1
