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

from omnijax.data import curriculum  # noqa: E402
from omnijax.errors import UsageError  # noqa: E402
from omnijax.models.mmdit import MMDiTConfig  # noqa: E402
from omnijax.train import main as train_main  # noqa: E402
from omnijax.train import trainer  # noqa: E402

OMNIHUMAN = f"{REPO}/configs/omnihuman.py"


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
    with pytest.raises(ValueError, match=r"unknown config arg 'colour'; known: size, stage.*MMDiTConfig"):
        omnihuman.get_config("size=tiny,colour=red")
    with pytest.raises(ValueError, match=r"'stag' \(did you mean 'stage'\?\)"):
        omnihuman.get_config("stag=2")
    with pytest.raises(ValueError, match="key=value"):
        omnihuman.get_config("tiny")
    with pytest.raises(ValueError, match="stage=4: expected one of 1, 2, 3"):
        omnihuman.get_config("stage=4")
    with pytest.raises(ValueError, match="size='huge': expected one of tiny, small, base, large"):
        omnihuman.get_config("size=huge")
    with pytest.raises(ValueError, match="stage='two': expected an integer"):
        omnihuman.get_config("stage=two")
    with pytest.raises(ValueError, match="head_dim"):        # the model the arg asks for is checked
        omnihuman.get_config("width=30")
    assert omnihuman.get_config("patch=1x1,scan_layers=false").model.overrides.to_dict() == \
        {"patch": (1, 1), "scan_layers": False}
    with pytest.raises(ValueError, match="frames=6: expected 1 \\+ 4k"):
        vae_config.get_config("frames=6")
    with pytest.raises(ValueError, match="res=20: expected a positive multiple of 8"):
        vae_config.get_config("res=20")
    with pytest.raises(ValueError, match="size='big': expected one of"):
        vae_config.get_config("size=big")


def test_vae_config():
    c = vae_config.get_config("size=tiny,frames=9,res=32")
    assert (c.objective, c.data.frames, c.data.height) == ("vae", 9, 32)


def test_first_line_of_each_config_is_its_command():
    for name in ("omnihuman.py", "vae.py"):   # the training configs
        first = (REPO / "configs" / name).read_text().splitlines()[0].removeprefix('r"""')
        assert first.startswith("python -m omnijax.train --config=configs/" + name), name


def test_config_files_import_no_sibling():
    # loaded by path, so a config imports only importable modules (no sys.path edits); the
    # subprocess tests below load them with only the repo on the path
    for f in sorted((REPO / "configs").glob("*.py")):
        assert "sys.path" not in f.read_text(), f


def test_cli_overrides_parse_through_config_flags():
    cfg, workdir, mode = train_main.parse_args([
        "--workdir=/tmp/unused", f"--config={OMNIHUMAN}:size=tiny,stage=2", "--config.train.steps=7",
        "--config.mesh.shape.tensor=2", "--config.curriculum.ratios.audio=0.3"])
    assert (workdir, mode) == ("/tmp/unused", "auto")
    assert cfg.train.steps == 7
    assert cfg.mesh.shape["tensor"] == 2
    assert cfg.curriculum.ratios.audio == 0.3
    # parsing is reentrant (the CLI and notebooks call main() in-process): a second parse
    # with other overrides sees none of the first one's
    cfg2, _, _ = train_main.parse_args(["--workdir=w", "--config", f"{OMNIHUMAN}:stage=1",
                                        "--config.train.steps=9", "--distributed=off"])
    assert cfg2.train.steps == 9 and cfg2.mesh.shape["tensor"] == 1 and cfg2.curriculum.stage == 1


@pytest.mark.parametrize("args, says", [
    (["--config.train.steps=abc"], "--config.train.steps=abc: expected an integer"),
    (["--config.curriculum.ratios.audio=hi"], "--config.curriculum.ratios.audio=hi: expected a number"),
    (["--config.trainx.steps=1"], "--config.trainx.steps: the config built by"),
    (["--workdirr=x"], "unknown flag --workdirr (did you mean --workdir?)"),
    (["--distributed=maybe"], "--distributed=maybe: value should be one of"),
    (["leftover"], "unexpected argument 'leftover'"),
    (["--config.train.steps.x=1"], "--config.train.steps.x: Attribute <class 'int'>.x does not exist"),
    (["--flagfile=/nonexistent/flags"], "Unable to open flagfile"),
])
def test_flag_mistakes_are_usage_errors(args, says):
    with pytest.raises(UsageError) as e:
        train_main.parse_args([f"--config={OMNIHUMAN}", "--workdir=w", *args])
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_config_file_that_crashes_keeps_its_traceback(tmp_path):
    f = tmp_path / "cfg.py"
    f.write_text("def get_config(arg=None):\n    raise RuntimeError('a bug')\n")
    with pytest.raises(RuntimeError, match="a bug"):          # a bug, not a user's mistake
        train_main.parse_args([f"--config={f}", "--workdir=w"])
    f.write_text("def get_config(arg=None):\n    raise ValueError(f'config arg {arg!r}: expected none')\n")
    with pytest.raises(UsageError, match=r"cfg.py:x=1: config arg 'x=1': expected none"):
        train_main.parse_args([f"--config={f}:x=1", "--workdir=w"])


def test_override_before_the_config_file_is_a_usage_error():
    with pytest.raises(UsageError, match="before a value for --config"):
        train_main.parse_args(["--config.train.steps=3", f"--config={OMNIHUMAN}", "--workdir=w"])


def test_config_that_cannot_run_is_a_usage_error():
    cfg = omnihuman.get_config("size=tiny")
    cfg.objective = "mmditt"
    with pytest.raises(UsageError, match="objective must be one of"):
        train_main.validate(cfg)
    cfg = omnihuman.get_config("size=tiny")
    cfg.mesh.shape["tensor"] = 3
    with pytest.raises(UsageError, match="cannot be split"):
        train_main.validate(cfg)
    cfg = omnihuman.get_config("size=tiny")
    cfg.objective_opts.motion_prob = 2.0
    with pytest.raises(UsageError, match="motion_prob"):
        train_main.validate(cfg)


# ----------------------------------------------------------------------------- as a user runs it

ENTRY_POINTS = {"cli": ["-m", "omnijax.cli", "train"], "module": ["-m", "omnijax.train"]}


def _run(entry: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("OMNIJAX_DEBUG", None)
    return subprocess.run([sys.executable, *ENTRY_POINTS[entry], *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_prints_usage_and_exits_0(entry):
    p = _run(entry, "--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for flag in ("--config=FILE[:ARGS]", "--config.KEY=VALUE", "--workdir=DIR", "--distributed"):
        assert flag in out
    assert "configs/omnihuman.py" in out and "configs/vae.py" in out
    for status in (trainer.OK, 2, trainer.PREEMPTED, trainer.NONFINITE):
        assert f"\n  {status}  " in out, status
    assert _run(entry, f"--config={OMNIHUMAN}", "-h").stdout == out   # anywhere on the line


# (args, what the one line must name); the workdir is appended where the row has one
ROWS = {
    "config_arg_typo": (["--config=configs/omnihuman.py:stag=2"], "'stag' (did you mean 'stage'?)"),
    "override_key_typo": (["--config=configs/omnihuman.py", "--config.train.stepz=5"],
                          "--config.train.stepz: the config built by configs/omnihuman.py has no key 'stepz' "
                          "(did you mean 'steps'?)"),
    "bad_stage": (["--config=configs/omnihuman.py:stage=4"], "stage=4: expected one of 1, 2, 3"),
    "missing_config_file": (["--config=configs/nope.py"], "--config file 'configs/nope.py': no such file"),
    "no_workdir": (["--config=configs/omnihuman.py"], "--workdir: no run directory given"),
    "no_config": ([], "--config: no config file given"),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("row", sorted(ROWS))
def test_mistake_is_one_line_exit_2_and_writes_nothing(entry, row, tmp_path):
    args, says = ROWS[row]
    workdir = tmp_path / "run"
    if row != "no_workdir":
        args = [*args, f"--workdir={workdir}"]
    p = _run(entry, *args)
    lines = p.stderr.splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("omnijax train: ") and says in lines[0], lines[0]
    assert not workdir.exists() and not list(tmp_path.iterdir())


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
