"""The benchmark harness works: `bench/gpu.sh --dry-run` (the prepared GPU run, at toy sizes on
this CPU) and `python -m bench` (rewrites a RESULTS.md with the script's tables)."""

import os
import subprocess
import sys

import pytest
from data_helpers import USER_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = USER_ENV


@pytest.mark.slow
def test_gpu_script_dry_run(tmp_path):
    out = tmp_path / "gpu.md"
    p = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    for heading in ("| peak |", "| train step", "| attention, non-prefix key mask", "| VAE |", "| sampler |"):
        assert heading in text, heading
    assert "DRY RUN" in text and "cudnn | n/a: no GPU" in text


@pytest.mark.slow
def test_python_m_bench_rewrites_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n## train: an earlier run\n\n```\nkept figures\n```\n\n"
                   "## sample: an earlier run\n\nold figures\n")
    p = subprocess.run([sys.executable, "-m", "bench", "--only", "sample", "--out", str(out),
                        "--args", "sample=--segments 1,2 --steps 2 --size 32 --repeats 2"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    assert "## sample:" in text and "| segments | frames |" in text and "FAILED" not in text
    assert "Machine:" in text and "jax" in text
    # --only: the other scripts' sections stay; the one run is replaced
    assert "## train: an earlier run" in text and "kept figures" in text
    assert "old figures" not in text and text.index("## train:") < text.index("## sample:")
