"""The eval figures are written whole (temp file, then rename), decode as PNGs of the
expected size, and are not blank."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from omnijax.eval import constructed as cx
from omnijax.eval import plots


def _decoded(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _not_blank(img):
    # more than background: many distinct colours, and a real share of non-white pixels
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    assert (img.min(axis=-1) < 200).mean() > 0.01


def _no_temp_left(folder):
    assert not [f for f in os.listdir(folder) if f.startswith(".")], os.listdir(folder)


def test_drift_png(tmp_path):
    path = plots.write_drift_png(tmp_path / "drift.png", {"truth": [0.2, 0.3, 0.2], "model": [1, 3, 6.5]},
                                 other_identity=27.0)
    img = _decoded(path)
    assert img.shape == (480, 800, 3)
    _not_blank(img)
    _no_temp_left(tmp_path)


def test_contact_sheet(tmp_path):
    clip = cx.render(0, 32, 1.0)["frames"]
    rows = {"truth": clip, "model": cx.blur(clip, 1.0)}
    path = plots.write_contact_sheet(tmp_path / "sheet.png", clip[0], rows, n=8)
    img = _decoded(path)
    s, g, L = plots.SHEET_SCALE, plots.SHEET_GAP, plots.SHEET_LABEL_W
    assert img.shape == (2 * (s * 32 + g) + g, L + 9 * (s * 32 + g) + g, 3)
    _not_blank(img)
    # row 0, tile 0 is the reference; tile 8 of row 0 is the last truth frame; row 1 below is the model
    tile = lambda r, c: img[g + r * (s * 32 + g):g + r * (s * 32 + g) + s * 32:s,  # noqa: E731
                            L + g + c * (s * 32 + g):L + g + c * (s * 32 + g) + s * 32:s]
    np.testing.assert_array_equal(tile(0, 0), clip[0])
    np.testing.assert_array_equal(tile(0, 8), clip[-1])
    np.testing.assert_array_equal(tile(1, 8), rows["model"][-1])
    with pytest.raises(ValueError, match="like the reference"):
        plots.contact_sheet(clip[0], {"bad": clip[:, :16]})


def test_curves_png(tmp_path):
    paths = {}
    for name, scale in (("small", 1.0), ("big", 0.5)):
        p = tmp_path / f"{name}.jsonl"
        rows = [{"step": s, "loss": scale * 2.0 / (1 + s), "lr": 1e-3} for s in range(0, 200, 10)]
        rows.insert(3, {"step": 30, "loss": 99.0})  # replaced by the later row for step 30 (a resume)
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 2")  # a torn last line
        paths[name] = str(p)
    assert [r["step"] for r in plots.read_metrics(paths["small"])] == list(range(0, 200, 10))
    assert plots.read_metrics(paths["small"])[3]["loss"] != 99.0
    out = plots.write_curves_png(tmp_path / "curves.png", paths, keys=("loss", "lr", "missing"))
    img = _decoded(out)
    assert img.shape == (3 * 320, 800, 3)
    _not_blank(img)
    _no_temp_left(tmp_path)


def test_curves_png_panels_chain_runs(tmp_path):
    """One panel per group of runs; `chain` puts stage after stage on one step axis."""
    paths = {}
    for name, base in (("vae", 0.5), ("s1", 2.0), ("s2", 1.0)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("\n".join(json.dumps({"step": s, "loss": base / (1 + s)}) for s in range(1, 50)))
        paths[name] = str(p)
    out = plots.write_curves_png(tmp_path / "c.png", paths, panels={"VAE": ["vae"], "MMDiT": ["s1", "s2"]},
                                 chain=True)
    img = _decoded(out)
    assert img.shape == (2 * 320, 800, 3)
    _not_blank(img[:320])
    _not_blank(img[320:])


def test_writers_replace_an_existing_file(tmp_path):
    target = tmp_path / "drift.png"
    target.write_bytes(b"old")
    plots.write_drift_png(target, {"a": [1.0, 2.0]})
    assert _decoded(target).shape == (480, 800, 3)
