"""`omnijax eval`: how well exported models follow audio, pose and identity, from pixels.

    omnijax eval --model models/s3 [--model models/s2] --data data/heldout --out eval/
        [--clips 4] [--seconds 20] [--steps N] [--seed 0]
    omnijax eval --real --video out.mp4 --audio speech.wav --ref photo.png --out eval/

SynthTalk mode samples the held-out clips of `--data` (an `omnijax synth` folder) with each
condition mix and measures them next to references from the same run (see
`omnijax.eval.synthtalk_eval`); `--model` twice compares two exports in one table. Writes
OUT/eval.json (schema in the README, "Evaluation"), OUT/drift.png, OUT/frames.png and, when
the exports carry training curves, OUT/curves.png.

`--real` measures any mp4 + wav with real-weight metrics (the `eval` extra).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from omnijax.errors import ArgumentParser, UsageError, require_dir, require_file
from omnijax.eval.report import write_json

SCHEMA_VERSION = 1


def _name(path: str, taken: set[str]) -> str:
    base = os.path.basename(os.path.normpath(path)) or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def table(results: dict[str, dict]) -> str:
    """The printed summary: one column per model."""
    names = list(results)
    rows = [("lip-sync model (audio)", lambda m: m["lipsync"]["model"]["peak"]),
            ("lip-sync truth", lambda m: m["lipsync"]["truth"]["peak"]),
            ("lip-sync vae", lambda m: m["lipsync"]["vae"]["peak"]),
            ("lip-sync vae streamed", lambda m: m["lipsync"]["vae_streamed"]["peak"]),
            ("lip-sync mismatched", lambda m: m["lipsync"]["mismatched"]["peak"]),
            ("lip-sync no_audio", lambda m: m["lipsync"]["no_audio"]["peak"]),
            ("lip-sync still", lambda m: m["lipsync"]["still"]["peak"]),
            ("pose error px model", lambda m: m["pose_error_px"]["model"]),
            ("pose error px no_pose", lambda m: m["pose_error_px"]["no_pose"]),
            ("pose error px truth", lambda m: m["pose_error_px"]["truth"]),
            ("vae psnr dB", lambda m: m["vae_psnr_db"]),
            ("drift first segment", lambda m: m.get("identity_drift", {}).get("per_segment", [np.nan])[0]),
            ("drift last segment", lambda m: m.get("identity_drift", {}).get("per_segment", [np.nan])[-1]),
            ("other identity", lambda m: m.get("identity_drift", {}).get("other_identity") or np.nan),
            ("seam ratio", lambda m: m.get("seam_ratio") or np.nan),
            ("fd proxy", lambda m: m["fd_proxy"])]
    width = max(len(r[0]) for r in rows)
    lines = [" " * width + "".join(f"{n:>14}" for n in names)]
    for label, get in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{get(results[n]):>14.3f}" for n in names))
    return "\n".join(lines)


def run_synthtalk(models: list[str], data: str, out: str, *, clips: int, seconds: float | None,
                  options=None, progress: bool = True) -> dict:
    """Evaluate each export on `clips` held-out clips (+ a `seconds`-long chained video),
    every video sampled with `options` (`long_video.Options`; default: the export's sampler)."""
    from omnijax.eval import plots
    from omnijax.eval import synthtalk_eval as st
    from omnijax.sample import long_video as lv
    from omnijax.sample.bundle import load_bundle, read_meta

    options = options or lv.Options()

    metas = [read_meta(m) for m in models]
    require_dir(data, "--data")
    v = metas[0]["video"]
    usable = st.load_clips(data, v["height"], v["width"], v["fps"], limit=clips + 2)
    if len(usable) < 2:
        raise UsageError(f"--data {data!r}: need at least 2 usable clips (one held out, one other "
                         f"identity for scale and mismatched audio), found {len(usable)}")
    held, others = usable[:min(clips, len(usable) - 1)], usable[min(clips, len(usable) - 1):]
    os.makedirs(out, exist_ok=True)
    from tqdm import tqdm
    results, arts, taken = {}, {}, set()
    t0 = time.perf_counter()
    for path, meta in zip(models, metas):
        name = _name(path, taken)
        bundle = load_bundle(path, compute_dtype="float32")
        bar = tqdm(total=len(held), desc=f"eval {name}", unit="clip", disable=not progress)
        metrics, art = st.evaluate_model(bundle, held, others, options=options, long_seconds=seconds,
                                         progress=lambda i, n: bar.update(1))
        bar.close()
        metrics["model"] = {"path": os.path.abspath(path), "stage": meta.get("stage"),
                            "conditions": meta.get("conditions"), "source": meta.get("source")}
        results[name], arts[name] = metrics, art
    first = next(iter(results))
    blob = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in results[first].items()}}
    blob["models"] = results
    blob["meta"] = {"models": {n: r["model"]["path"] for n, r in results.items()},
                    "data": os.path.abspath(data), "clips": [c.name for c in held],
                    "other_clips": [c.name for c in others], "seconds": seconds,
                    "steps": options.steps if options.steps is not None else metas[0]["sampler"]["steps"],
                    "seed": options.seed, "color_anchor": options.color_anchor,
                    "blend_seams": options.blend_seams,
                    "command": " ".join(["omnijax", "eval", *sys.argv[2:]]) if sys.argv[1:2] == ["eval"] else None,
                    "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(os.path.join(out, "eval.json"), blob)
    ref = held[0].reference
    rows = {"truth": held[0].frames}
    for name, art in arts.items():
        prefix = f"{name} " if len(arts) > 1 else ""
        for mix in ("audio_pose", "audio", "text"):
            rows[f"{prefix}{mix}"] = art["first"][mix]
    plots.write_contact_sheet(os.path.join(out, "frames.png"), ref, rows)
    curves = {n: r["identity_drift"]["per_segment"] for n, r in results.items() if "identity_drift" in r}
    if curves:
        plots.write_drift_png(os.path.join(out, "drift.png"), curves,
                              results[first]["identity_drift"].get("other_identity"))
    jsonl = {}
    for n, m in zip(results, models):     # an export's curves/: metrics.jsonl, or one file per run
        folder = os.path.join(m, "curves")
        for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if f.endswith(".jsonl"):
                stem = os.path.splitext(f)[0]
                jsonl[n if stem == "metrics" else f"{n} {stem}"] = os.path.join(folder, f)
    if jsonl:
        plots.write_curves_png(os.path.join(out, "curves.png"), jsonl)
    return blob


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="omnijax eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="an `omnijax export` directory (twice to compare)")
    p.add_argument("--data", help="SynthTalk folder of held-out clips (`omnijax synth --out DIR`)")
    p.add_argument("--clips", type=int, default=4, help="held-out clips to sample")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the chained video (drift, seams)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the export's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--color-anchor", action="store_true",
                   help="chain the long video with Lab colour anchoring (`omnijax sample --color-anchor`)")
    p.add_argument("--no-blend-seams", dest="blend_seams", action="store_false",
                   help="chain the long video without cross-faded seams (`omnijax sample --no-blend-seams`)")
    p.add_argument("--real", action="store_true", help="real-weight metrics of any video (eval extra)")
    p.add_argument("--video", help="--real: the mp4 to measure")
    p.add_argument("--audio", help="--real: its speech")
    p.add_argument("--ref", help="--real: the reference photo")
    p.add_argument("--out", required=True, help="output folder (eval.json, PNGs)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.real:
        for flag in ("video", "audio", "ref"):
            require_file(getattr(a, flag) or "", f"--{flag}")
        from omnijax.eval import real
        blob = real.evaluate_real(a.video, a.audio, a.ref, a.out)
        print(json.dumps({k: blob[k] for k in blob if k != "meta"}, indent=1, default=float))
        return 0
    if not a.model or not a.data:
        raise UsageError("give --model EXPORT_DIR and --data SYNTH_DIR (or --real --video --audio --ref)")
    if a.clips < 1:
        raise UsageError(f"--clips {a.clips}: expected >= 1")
    if not (a.seconds >= 0 and np.isfinite(a.seconds)):
        raise UsageError(f"--seconds {a.seconds}: expected a number >= 0 (0: no chained video)")
    if a.steps is not None and a.steps < 1:
        raise UsageError(f"--steps {a.steps}: expected >= 1")
    from omnijax.sample.bundle import read_meta
    for m in a.model:
        read_meta(m)
    from omnijax.sample import long_video as lv
    options = lv.Options(steps=a.steps, seed=a.seed, color_anchor=a.color_anchor, blend_seams=a.blend_seams)
    blob = run_synthtalk(a.model, a.data, a.out, clips=a.clips, seconds=a.seconds or None, options=options,
                         progress=not a.quiet)
    print(table(blob["models"]))
    print(f"-> {os.path.join(a.out, 'eval.json')}, frames.png, drift.png")
    return 0
