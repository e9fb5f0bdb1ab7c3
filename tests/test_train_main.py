"""Entry points and config files: `python -m omnijax.train`, `omnijax train`, configs/*.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "configs"))
import omnihuman  # noqa: E402
import vae as vae_config  # noqa: E402

from omnijax.models.mmdit import MMDiTConfig  # noqa: E402
from omnijax.train import curriculum  # noqa: E402


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_omnihuman_config_variants(stage):
    c = omnihuman.get_config(f"size=small,stage={stage},lora=16,depth=4")
    assert c.objective == "mmdit" and c.model.size == "small"
    assert c.model.overrides.to_dict() == {"depth": 4}
    assert c.curriculum.stage == stage
    assert dict(c.curriculum.ratios) == curriculum.get_stage(stage).ratios()
    assert c.lora.rank == 16
    # presets are named, not redefined: the config holds the name + overrides only
    assert MMDiTConfig.preset("small", **c.model.overrides.to_dict()).depth == 4


def test_config_arg_errors_say_what_is_known():
    with pytest.raises(ValueError, match="unknown config args.*MMDiTConfig fields"):
        omnihuman.get_config("size=tiny,colour=red")
    with pytest.raises(ValueError, match="key=value"):
        omnihuman.get_config("tiny")


def test_vae_config():
    c = vae_config.get_config("size=tiny,frames=9,res=32")
    assert (c.objective, c.data.frames, c.data.height) == ("vae", 9, 32)


def test_first_line_of_each_config_is_its_command():
    for f in sorted((REPO / "configs").glob("*.py")):
        if f.name == "common.py":
            continue
        first = f.read_text().splitlines()[0].removeprefix('r"""')
        assert first.startswith("python -m omnijax.train --config=configs/" + f.name), f


def test_cli_overrides_parse_through_config_flags():
    # the same machinery main() uses: file:arg plus --config.x=y overrides
    from omnijax.train.main import FLAGS as fv
    argv = ["prog", "--workdir=/tmp/unused", f"--config={REPO}/configs/omnihuman.py:size=tiny,stage=2",
        "--config.train.steps=7", "--config.mesh.shape.tensor=2", "--config.curriculum.ratios.audio=0.3"]
    saved, sys.argv = sys.argv, argv       # (main() does the same: see its comment)
    try:
        fv(argv)
    finally:
        sys.argv = saved
    assert fv.config.train.steps == 7
    assert fv.config.mesh.shape["tensor"] == 2
    assert fv.config.curriculum.ratios.audio == 0.3
    fv.unparse_flags()


def test_usage_without_flags():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "omnijax.train"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "usage: python -m omnijax.train" in p.stderr
    p = subprocess.run([sys.executable, "-m", "omnijax.cli", "train", "--workdir=/tmp/x"], env=env,
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "--config=configs/omnihuman.py" in p.stderr


def test_launch_scripts_print_usage():
    for script in ("local.sh", "tpu_pod.sh", "slurm.sbatch"):
        p = subprocess.run(["bash", str(REPO / "launch" / script)], capture_output=True, text=True)
        assert p.returncode == 2 and "Usage:" in p.stdout, script


@pytest.mark.slow
def test_shards_end_to_end(tmp_path):
    """synth -> preprocess -> `python -m omnijax.train ... data=shards` (the grain pipeline),
    then a resume that continues the grain iterator."""
    import json
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    run = lambda *a: subprocess.run([sys.executable, "-m", "omnijax.cli", *a], env=env, cwd=REPO,
                                    check=True, capture_output=True, text=True)
    run("synth", "--out", str(tmp_path / "clips"), "--clips", "4", "--size", "64", "--seconds", "1",
        "--speech", "syllable")
    run("preprocess", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "cache"),
        "--bucket", "9x64x64")
    args = ["train", "--config=configs/omnihuman.py:size=tiny,stage=3,data=shards,depth=1",
            f"--workdir={tmp_path / 'run'}", f"--config.data.path={tmp_path / 'cache'}",
            "--config.data.bucket=9x64x64", "--config.train.batch_size=2",
            "--config.checkpoint.every=2", "--config.train.log_every=1",
            "--config.objective_opts.motion_prob=0"]
    run(*args, "--config.train.steps=2")
    run(*args, "--config.train.steps=4")
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    state = json.loads((tmp_path / "run" / "checkpoints" / "4" / "data" / "process_0-of-1.json").read_text())
    assert state["next_index"] == 4
