"""`launch/local.sh 2 ...`: two processes over 127.0.0.1 (gloo) train like one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

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
