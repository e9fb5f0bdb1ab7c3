"""PNG figures for `omnijax eval`: drift curves, contact sheets, training curves.

Every writer renders to a temporary file beside the target and renames it into place, so
a reader (a CI artifact upload, a notebook refreshing the image) never sees half a PNG.
matplotlib runs on its Agg backend (no display needed); the contact sheet is composed
pixel-exactly with numpy (nearest-neighbour upscaling: no interpolation smears the small
frames) and labelled with Pillow.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np

SHEET_SCALE = 2  # contact sheet: each frame pixel becomes SHEET_SCALE x SHEET_SCALE
SHEET_GAP = 4  # pixels between tiles (after scaling)
SHEET_LABEL_W = 96  # width of the row-name column


def _atomic(path: str | os.PathLike, write) -> str:
    """Call write(tmp_path) for a temporary file beside `path`, then rename it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".png", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: CI and TPU hosts have no display
    import matplotlib.pyplot as plt

    return plt


def write_drift_png(path, curves: dict[str, list[float]], other_identity: float | None = None,
                    title: str = "identity drift") -> str:
    """Per-segment appearance distance to the reference, one line per name (e.g. truth,
    VAE, model), with a dashed line at the distance to other identities (the scale: drift
    that far is someone else). -> the path written (800 x 480 px)."""
    if not curves:
        raise ValueError("curves: expected at least one name -> per-segment distances")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    for name, ys in curves.items():
        ys = np.asarray(ys, np.float64)
        ax.plot(np.arange(1, ys.size + 1), ys, marker="o", label=name)
    if other_identity is not None and math.isfinite(other_identity):
        ax.axhline(other_identity, color="grey", linestyle="--", label="other identity")
    ax.set_xlabel("segment")
    ax.xaxis.get_major_locator().set_params(integer=True)  # segments are whole numbers
    ax.set_ylabel("appearance distance to reference (Delta E)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    try:
        return _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def contact_sheet(reference: np.ndarray, rows: dict[str, np.ndarray], n: int = 8) -> np.ndarray:
    """Reference `(H, W, 3)` + name -> frames `(T, H, W, 3)` -> the sheet, uint8 RGB of
    shape (R * (s H + g) + g, L + (n + 1) * (s W + g) + g, 3) with s = SHEET_SCALE,
    g = SHEET_GAP, L = SHEET_LABEL_W, R = number of rows.

    Each row: the reference, then n frames evenly spread over that row's video (first to
    last), in the order given (put truth above model)."""
    ref = np.asarray(reference)
    if ref.ndim != 3 or ref.shape[-1] != 3:
        raise ValueError(f"reference: expected uint8 (H, W, 3), got shape {ref.shape}")
    if not rows or n < 1:
        raise ValueError(f"expected at least one row and n >= 1, got {len(rows)} rows, n={n}")
    H, W = ref.shape[:2]
    s, g, L = SHEET_SCALE, SHEET_GAP, SHEET_LABEL_W
    sheet = np.full((len(rows) * (s * H + g) + g, L + (n + 1) * (s * W + g) + g, 3), 255, np.uint8)
    up = lambda im: np.repeat(np.repeat(np.asarray(im, np.uint8), s, 0), s, 1)  # noqa: E731
    for r, (name, frames) in enumerate(rows.items()):
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != ref.shape:
            raise ValueError(f"row {name!r}: expected frames (T, {H}, {W}, 3) like the reference, got {frames.shape}")
        picks = np.linspace(0, frames.shape[0] - 1, n).round().astype(int)
        y = g + r * (s * H + g)
        for c, im in enumerate([ref] + [frames[i] for i in picks]):
            x = L + g + c * (s * W + g)
            sheet[y:y + s * H, x:x + s * W] = up(im)
    from PIL import Image, ImageDraw

    img = Image.fromarray(sheet)
    draw = ImageDraw.Draw(img)
    for r, name in enumerate(rows):
        draw.text((4, g + r * (s * H + g) + s * H // 2 - 6), str(name)[:14], fill=(0, 0, 0))
    return np.asarray(img)


def write_contact_sheet(path, reference: np.ndarray, rows: dict[str, np.ndarray], n: int = 8) -> str:
    """Write `contact_sheet(reference, rows, n)` as a PNG. -> the path written."""
    sheet = contact_sheet(reference, rows, n)
    from PIL import Image

    return _atomic(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))


def read_metrics(path) -> list[dict]:
    """A `metrics.jsonl` -> its rows in order, the last row winning for a repeated step
    (a resumed run appends steps it already logged). Lines that are not JSON objects with
    a "step" (a line cut short by a crash) are skipped."""
    by_step: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                by_step[int(row["step"])] = row
    return [by_step[k] for k in sorted(by_step)]


def write_curves_png(path, metrics_jsonl_paths: dict[str, str], keys=("loss",),
                     title: str = "training", panels: dict[str, list[str]] | None = None,
                     chain: bool = False) -> str:
    """Training curves: one panel per key, one line per run (name -> its metrics.jsonl),
    value against step; a log scale where a panel's values are all positive and span more
    than a decade. -> the path written (width 800 px, 320 px per panel).

    `panels` (title -> run names) instead draws the first key once per panel, for runs whose
    losses are not comparable (a VAE's and an MMDiT's); `chain` continues each run's steps
    after the previous one's last step in its panel (curriculum stages one after another)."""
    keys = tuple(keys)
    if not metrics_jsonl_paths or not keys:
        raise ValueError("expected at least one run (name -> metrics.jsonl path) and one key")
    runs = {name: read_metrics(p) for name, p in metrics_jsonl_paths.items()}
    layout = ([(t, keys[0], [n for n in names if n in runs]) for t, names in panels.items()] if panels
              else [(None, k, list(runs)) for k in keys])
    plt = _pyplot()
    fig, axes = plt.subplots(len(layout), 1, figsize=(8, 3.2 * len(layout)), dpi=100, squeeze=False)
    for ax, (panel, key, names) in zip(axes[:, 0], layout):
        values, offset = [], 0
        for name in names:
            pts = [(r["step"] + offset, float(r[key])) for r in runs[name]
                   if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=name)
                values += ys
                offset = xs[-1] if chain else 0
        positive = [v for v in values if v > 0]
        if values and len(positive) == len(values) and max(values) > 10 * min(values):
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(panel, fontsize=10)
        if values:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {key!r} logged", ha="center", va="center", transform=ax.transAxes)
    axes[-1, 0].set_xlabel("step" + (" (runs one after another)" if chain else ""))
    if not panels:
        axes[0, 0].set_title(title)
    else:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
