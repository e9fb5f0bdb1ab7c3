"""`omnijax sample`: a real mp4 from an export, and one-line errors (exit 2, nothing written)
for every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import export_helpers as eh
from omnijax import export


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_cli")
    run = eh.fake_run(root / "run", eh.tiny_mmdit_config())
    model = export.export(run, str(root / "model"), vae="tiny", dtype="bfloat16")
    t = np.arange(int(1.5 * 16000)) / 16000
    sf.write(root / "speech.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    sf.write(root / "silence.wav", np.zeros(16000, np.float32), 16000)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / "ref.png")
    (root / "not_an_image.png").write_text("hello")
    (root / "bad_pose.json").write_text(json.dumps({"fps": 25, "names": ["nose", "neck"],
                                                    "frames": [[[1, 2, 1], [3, 4, 1]]]}))
    return {k: str(v) for k, v in dict(root=root, model=model, wav=root / "speech.wav",
                                      silence=root / "silence.wav", ref=root / "ref.png",
                                      bad_img=root / "not_an_image.png",
                                      bad_pose=root / "bad_pose.json").items()}


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "omnijax.cli", "sample", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_sample_writes_an_mp4_with_the_audio(files):
    import av
    out = os.path.join(files["root"], "out.mp4")
    p = _run("--model", files["model"], "--ref", files["ref"], "--audio", files["wav"], "--text",
             "a person", "--steps", "2", "--seed", "3", "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    assert "centre-cropped and resized" in p.stderr and "wrote" in p.stdout
    with av.open(out) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (32, 32)
        assert abs(float(v.duration * v.time_base) - 1.5) <= 1 / 25 + 1e-6
        assert abs(float(a.duration * a.time_base) - 1.5) <= 1 / 25 + 1e-6
    assert not [n for n in os.listdir(files["root"]) if n.endswith(".part")]


@pytest.mark.parametrize("case", ["no_export", "missing_ref", "bad_image", "missing_audio", "bad_pose",
                                  "no_length", "bad_cfg", "bad_out_dir"])
def test_bad_input_is_one_line_and_writes_nothing(files, case):
    out = os.path.join(files["root"], f"{case}.mp4")
    base = ["--model", files["model"], "--ref", files["ref"], "--audio", files["wav"], "--out", out]
    args, needle = {
        "no_export": (["--model", files["root"], "--ref", files["ref"], "--audio", files["wav"],
                       "--out", out], "not an exported model"),
        "missing_ref": ([*base, "--ref", os.path.join(files["root"], "nope.png")], "--ref"),
        "bad_image": ([*base, "--ref", files["bad_img"]], "not a readable image"),
        "missing_audio": ([*base, "--audio", os.path.join(files["root"], "nope.wav")], "--audio"),
        "bad_pose": ([*base, "--pose", files["bad_pose"]], "keypoints"),
        "no_length": (["--model", files["model"], "--ref", files["ref"], "--out", out], "--seconds"),
        "bad_cfg": ([*base, "--cfg-audio", "loud"], "--cfg-audio"),
        "bad_out_dir": ([*base[:-1], os.path.join(files["root"], "nodir", "x.mp4")], "--out"),
    }[case]
    p = _run(*args)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not os.path.exists(out)


def test_silent_audio_is_a_warning_not_an_error(files):
    out = os.path.join(files["root"], "silent.mp4")
    p = _run("--model", files["model"], "--audio", files["silence"], "--text", "someone", "--steps", "1",
             "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    assert "silent" in p.stderr and "identity comes from the text" in p.stderr
    assert os.path.exists(out)
