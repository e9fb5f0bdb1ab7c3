"""kill -9 at a random step, rerun the same command: the run resumes from the last
checkpoint and every following loss equals the uninterrupted run's (deterministic data
position + per-step rng)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


import train_toy

REPO = Path(__file__).resolve().parents[1]
TESTS = str(Path(__file__).resolve().parent)


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([TESTS, str(REPO)]),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _cmd(config_file: str, workdir: Path, extra=()) -> list[str]:
    return [sys.executable, "-m", "omnijax.train", f"--config={config_file}", f"--workdir={workdir}",
            "--distributed=off", *extra]


def _losses(workdir: Path) -> dict[int, float]:
    """step -> loss; a step re-run after a resume overwrites its earlier (killed) line."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row["loss"]
    return out


def _steps_logged(workdir: Path) -> int:
    f = workdir / "metrics.jsonl"
    if not f.exists():
        return 0
    lines = f.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def test_kill9_resume_matches_uninterrupted_run(tmp_path):
    cfg_file = train_toy.write_config_file(tmp_path / "toy_cfg.py", TESTS)
    args = ("--config.train.steps=30", "--config.checkpoint.every=5", "--config.data.delay_s=0.04")
    env = _env(4)

    ref = tmp_path / "ref"
    subprocess.run(_cmd(cfg_file, ref, args), env=env, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run = tmp_path / "run"
    # A new kill step each run covers more of them over time; the seed is printed (pytest
    # shows it with a failure) and OMNIJAX_KILL_SEED=<seed> repeats that run's kill step.
    seed = int(os.environ.get("OMNIJAX_KILL_SEED") or random.SystemRandom().randrange(2**32))
    kill_at = random.Random(seed).randint(8, 22)
    print(f"kill seed {seed}: kill -9 at step {kill_at} (repeat: OMNIJAX_KILL_SEED={seed})")
    proc = subprocess.Popen(_cmd(cfg_file, run, args), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _steps_logged(run) < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run finished before it could be killed (seed {seed})"
    killed_at = _steps_logged(run)
    assert 0 < killed_at < 30, f"seed {seed}"
    n_lines = len((run / "metrics.jsonl").read_text().splitlines())

    subprocess.run(_cmd(cfg_file, run, args), env=env, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the rerun started after the last checkpoint, not from scratch
    rerun = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()[n_lines:]]
    assert rerun[0] > 1 and rerun[0] % 5 == 1 and rerun[0] <= killed_at + 1, (seed, rerun[:3])
    assert rerun == list(range(rerun[0], 31)), f"seed {seed}"
    a, b = _losses(ref), _losses(run)
    assert sorted(b) == list(range(1, 31)), f"seed {seed}"
    # every step from the resume point on (and before it) equals the uninterrupted run
    assert [b[s] for s in range(1, 31)] == [a[s] for s in range(1, 31)], f"seed {seed}"


def test_sigterm_checkpoints_and_exits(tmp_path):
    cfg_file = train_toy.write_config_file(tmp_path / "toy_cfg.py", TESTS)
    args = ("--config.train.steps=200", "--config.checkpoint.every=1000", "--config.data.delay_s=0.05")
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(cfg_file, run, args), env=_env(2), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _steps_logged(run) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3            # PREEMPTED: checkpointed, clean exit
    stopped = _steps_logged(run)
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [stopped]                    # the signal's checkpoint (interval is 1000)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps"] == 200
