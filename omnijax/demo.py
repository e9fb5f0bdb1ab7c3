"""`omnijax demo`: the project's main job in one command, on a laptop CPU.

    omnijax demo [--out DIR]                  the bundled model: a 20-second video of a
                                              held-out identity, its evaluation (~1 min)
    omnijax demo --train [--minutes 25]       the whole system from scratch (configs/demo.py)
    omnijax demo --quick                      the same at toy sizes (plumbing, ~3 min)

Either way OUT holds video.mp4 (with the speech), frames.png (reference, truth row, model
row), eval.json (lip-sync and pose next to their references, identity drift per segment,
seams) and curves.png (the training curves). With --train every phase writes into OUT and
is recorded in OUT/phases.json when it finishes, so a rerun continues after the last
finished phase:

    synth -> vae -> preprocess -> stage1 -> stage2 -> stage3 -> export -> video -> eval
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time

import numpy as np

from omnijax.errors import ArgumentParser, UsageError

log = logging.getLogger(__name__)

BUNDLED = os.path.join(os.path.dirname(__file__), "assets", "demo_model")
CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "demo.py")
PHASES = ("synth", "vae", "preprocess", "stage1", "stage2", "stage3", "export", "video", "eval")


# ----------------------------------------------------------------------------- the recipe

def config_module(name: str):
    """configs/<name>.py, loaded by path like every config file (they are not a package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(CONFIG), f"{name}.py")
    if not os.path.exists(path):
        raise UsageError(f"the demo needs {path} (run it from a checkout of omnijax)")
    spec = importlib.util.spec_from_file_location(f"omnijax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_recipe(quick: bool, minutes: float | None):
    arg = f"quick={quick}" + (f",minutes={minutes}" if minutes is not None else "")
    try:
        return config_module("demo").get_config(arg)
    except ValueError as e:
        raise UsageError(str(e)) from None


class Phases:
    """OUT/phases.json: which phases finished, how long each took (resumable runs)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "phases.json")
        self.done = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def run(self, name: str, fn, progress: bool = True):
        if name in self.done:
            if progress:
                print(f"[demo] {name}: done earlier ({self.done[name]['seconds']:.0f} s), skipped")
            return self.done[name].get("info")
        if progress:
            print(f"[demo] {name} ...", flush=True)
        t0 = time.perf_counter()
        info = fn()
        self.done[name] = {"seconds": round(time.perf_counter() - t0, 1), "info": info}
        from omnijax.eval.report import json_safe
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(json_safe(self.done), f, indent=1, default=str, allow_nan=False)
        os.replace(tmp, self.path)
        if progress:
            print(f"[demo] {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return info


# ----------------------------------------------------------------------------- phases

def minutes_trained(workdir: str) -> float:
    """Loop time a training run in `workdir` has already spent, from its metrics.jsonl
    (each row's steps_per_s covers the steps since the row before). A phase interrupted
    by a reboot resumes with what is left of its share, not a fresh one; the steps of an
    attempt past its last checkpoint count too (that time was spent)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0.0
    seconds, last = 0.0, 0         # the first attempt starts at step 0
    for line in open(path):
        try:
            row = json.loads(line)
        except ValueError:          # a line cut short by the interruption
            continue
        step, rate = row.get("step"), row.get("steps_per_s")
        if step > last and rate:
            seconds += (step - last) / rate
        last = step
    return seconds / 60.0


def _budget(c, share: float, workdir: str) -> float:
    left = c.minutes * share - minutes_trained(workdir)
    if left < c.minutes * share:
        log.warning("%s resumes with %.1f of its %.1f minutes left", workdir, max(left, 0.0),
                    c.minutes * share)
    return max(left, 0.05)     # > 0: a spent budget still ends in one step and a checkpoint


def _synth(c, out: str) -> dict:
    from omnijax.data import synthetic as st
    s = c.synth
    common = dict(size=s.size, fps=s.fps, framing=s.framing, mouth_scale=s.mouth_scale)
    for name, kw in (("train", dict(clips=s.train_clips, seed=s.train_seed, seconds=s.seconds,
                                    out_of_sync=s.out_of_sync, occluded=s.occluded, missing=s.missing)),
                     ("heldout", dict(clips=s.heldout_clips, seed=s.heldout_seed, seconds=s.heldout_seconds,
                                      out_of_sync=0.0, occluded=0.0, missing=0.0))):
        path = os.path.join(out, "data", name)
        shutil.rmtree(path, ignore_errors=True)
        st.generate(st.SynthConfig(**common, **kw), path, progress=False)
    return {"train": s.train_clips, "heldout": s.heldout_clips}


def fit_devices(cfg) -> None:
    """The recipe's small batches (2 clips for the VAE) on a host with more devices than
    divide them: train on the largest device count that does (`mesh.devices`)."""
    import math

    import jax
    n, batch = jax.device_count(), int(cfg.train.batch_size)
    if jax.process_count() == 1 and batch % n:
        cfg.mesh.devices = math.gcd(batch, n)
        log.warning("batch %d does not split over %d devices: training on %d of them", batch, n,
                    cfg.mesh.devices)


def _train(cfg, workdir: str) -> dict:
    from omnijax.train import trainer
    fit_devices(cfg)
    status = trainer.train(cfg, workdir)
    if status not in (trainer.OK,):
        raise RuntimeError(f"training in {workdir} stopped with status {status}")
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    # the loop's minutes over every attempt (a phase resumed after a reboot took longer
    # than its own entry in phases.json says)
    return {"steps": rows[-1]["step"], "loss": rows[-1]["loss"],
            "train_minutes": round(minutes_trained(workdir), 1)}


def vae_train_config(c):
    """The recipe's VAE training config (no time budget: `_vae` sets it). Its schedule is
    warmup-stable-decay at a constant rate until `_cooled` sets the cooldown."""
    v = c.vae
    cfg = config_module("vae").get_config(f"size={v.size},frames={v.frames},res={c.synth.size}")
    cfg.data.update(framing=c.synth.framing, mouth_scale=c.synth.mouth_scale)
    cfg.train.update(steps=v.steps, batch_size=v.batch_size, log_every=10)
    cfg.optim.update(lr=v.lr, ema_decay=v.ema_decay, schedule="wsd", decay_steps=v.steps, cooldown_steps=0,
                     final_lr_ratio=v.final_lr_ratio)
    cfg.objective_opts.update(posterior=v.posterior, motion_weight=v.motion_weight)
    cfg.checkpoint.every = 200
    return cfg


def _cooled(cfg, workdir: str, minutes: float, cooldown: float) -> dict:
    """Train for a wall-clock budget of `minutes` (what is left of it when resumed) and end
    annealed: at the constant rate for the first `1 - cooldown` of the time, then resumed
    with the rate falling linearly to `final_lr_ratio` over as many more steps as the main
    part's pace fits in the `cooldown` share (optim.schedule "wsd"). A time budget has no
    step count to plan a decay over before it starts; this one is counted from the steps
    the main part reached, written to `cooldown.json` so a resumed phase keeps it.
    `cfg.train.steps` caps both parts together, split by the same fractions."""
    if not 0 <= cooldown < 1:
        raise ValueError(f"cooldown={cooldown}: expected a fraction of the budget in [0, 1)")
    if cooldown == 0:
        cfg.train.max_minutes = max(minutes - minutes_trained(workdir), 0.05)
        return _train(cfg, workdir)
    plan_path = os.path.join(workdir, "cooldown.json")
    cap, cool_minutes = int(cfg.train.steps), minutes * cooldown
    if not os.path.exists(plan_path):
        left = minutes - minutes_trained(workdir)
        cfg.train.update(steps=max(1, round(cap * (1 - cooldown))), max_minutes=max(left - cool_minutes, 0.05))
        reached = _train(cfg, workdir)["steps"]
        plan = {"from": reached, "steps": max(1, round(reached * cooldown / (1 - cooldown)))}
        with open(plan_path + ".tmp", "w") as f:
            json.dump(plan, f)
        os.replace(plan_path + ".tmp", plan_path)
    plan = json.load(open(plan_path))
    total = plan["from"] + plan["steps"]
    # the cooldown's own time plus half of it again as slack: its pace was estimated with
    # the main part's compile included, and a cut-short cooldown ends above the final rate
    left = max(minutes - minutes_trained(workdir), 0.0) + 0.5 * cool_minutes
    cfg.train.update(steps=total, max_minutes=max(left, 0.05))
    cfg.optim.update(schedule="wsd", decay_steps=total, cooldown_steps=plan["steps"])
    info = _train(cfg, workdir)
    return dict(info, cooldown_from=plan["from"])


def _vae(c, out: str) -> dict:
    from omnijax import export
    v = c.vae
    workdir = os.path.join(out, "runs", "vae")
    _budget(c, c.shares.vae, workdir)           # says so when the phase resumes
    info = _cooled(vae_train_config(c), workdir, c.minutes * c.shares.vae, v.cooldown)
    target = os.path.join(out, "models", "vae")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    export.export(workdir, target, stats_clips=v.stats_clips)
    return info


def _preprocess(c, out: str) -> dict:
    from omnijax.data import preprocess
    p = c.preprocess
    cfg = preprocess.PreprocessConfig(buckets=(p.bucket,), fps=c.synth.fps, stride=p.stride,
                                      audio_encoder=p.audio_encoder, text_encoder=p.text_encoder,
                                      vae=os.path.join(out, "models", "vae"))
    m = preprocess.run(os.path.join(out, "data", "train", "clips"), os.path.join(out, "cache"), cfg,
                       progress=False)
    return {"records": m["records"], "audio_ok": m["clips"]["audio_ok"], "clips": m["clips"]["used"]}


def _stage(c, out: str, k: int) -> dict:
    omnihuman = config_module("omnihuman")
    m = c.mmdit
    cfg = omnihuman.get_config(f"size={m.size},stage={k},data=shards")
    cfg.data.update(path=os.path.join(out, "cache"), bucket=c.preprocess.bucket)
    steps = int(c.stages[f"stage{k}"])
    workdir = os.path.join(out, "runs", f"s{k}")
    cfg.train.update(steps=steps, batch_size=m.batch_size, log_every=25,
                     max_minutes=_budget(c, c.shares[f"stage{k}"], workdir))
    cfg.optim.update(lr=m.lr, ema_decay=m.ema_decay, decay_steps=steps, final_lr_ratio=1.0, warmup_steps=50)
    cfg.checkpoint.every = 500
    cfg.sample = dict(c.sample)
    if k > 1:
        cfg.init_from = os.path.join(out, "runs", f"s{k - 1}")
    return _train(cfg, workdir)


def _export(out: str) -> dict:
    from omnijax import export
    for k in (2, 3):
        target = os.path.join(out, "models", f"s{k}")
        shutil.rmtree(target, ignore_errors=True)
        export.export(os.path.join(out, "runs", f"s{k}"), target, dtype="bfloat16")
    return {"models": ["s2", "s3"]}


# ----------------------------------------------------------------------------- video + eval

def _heldout(c, out: str, height: int, width: int):
    from omnijax.eval import synthtalk_eval as ste
    clips = ste.load_clips(os.path.join(out, "data", "heldout"), height, width, c.synth.fps)
    if len(clips) < 2:
        raise RuntimeError("the held-out set needs 2 clips (one to sample, one other identity)")
    return clips[0], clips[1:]


def _options():
    """How the demo samples: the export's sampler, seed 0 (the video and every reference
    video eval samples beside it)."""
    from omnijax.sample import long_video as lv
    return lv.Options(seed=0)


def _video(c, out: str, model_dir: str, name: str = "video.mp4") -> dict:
    from omnijax.sample import long_video as lv
    from omnijax.sample.bundle import load_bundle
    bundle = load_bundle(model_dir, compute_dtype="float32")
    clip, _ = _heldout(c, out, bundle.video["height"], bundle.video["width"])
    segs = list(lv.generate_segments(bundle, ref=clip.reference, audio=clip.wave, pose=clip.keypoints,
                                     pose_fps=clip.fps, text=clip.caption, options=_options()))
    frames = np.concatenate([s.frames for s in segs])
    lv.write_mp4(os.path.join(out, name), frames, bundle.video["fps"], clip.wave, bundle.video["sample_rate"])
    starts = lv.content_starts(segs)
    np.save(os.path.join(out, "work", f"{os.path.splitext(name)[0]}_frames.npy"), frames)
    return {"frames": int(frames.shape[0]), "segments": len(segs), "segment_starts": starts,
            "seconds_per_segment": float(np.median([s.seconds for s in segs[1:]] or [segs[0].seconds]))}


def _eval(c, out: str, models: dict[str, str], videos: dict[str, dict]) -> dict:
    from omnijax.eval import plots
    from omnijax.eval import synthtalk_eval as ste
    from omnijax.eval.report import write_json
    from omnijax.sample.bundle import load_bundle
    results = {}
    for name, path in models.items():
        bundle = load_bundle(path, compute_dtype="float32")
        clip, others = _heldout(c, out, bundle.video["height"], bundle.video["width"])
        frames = np.load(os.path.join(out, "work", f"{videos[name]['stem']}_frames.npy"))
        results[name] = ste.evaluate_video(bundle, frames, videos[name]["segment_starts"], clip, others,
                                           reference_seconds=c.eval.reference_seconds, options=_options())
    first = next(iter(results))
    blob = {"schema_version": 1, **results[first], "models": results,
            "meta": {"models": {n: os.path.abspath(p) for n, p in models.items()}, "clip": clip.name,
                     "other_clips": [o.name for o in others], "seconds": frames.shape[0] / clip.fps,
                     "reference_seconds": c.eval.reference_seconds, "steps": c.sample.steps}}
    write_json(os.path.join(out, "eval.json"), blob)
    rows = {"truth": clip.frames}
    for name in models:
        rows[name] = np.load(os.path.join(out, "work", f"{videos[name]['stem']}_frames.npy"))
    plots.write_contact_sheet(os.path.join(out, "frames.png"), clip.reference, rows, n=10)
    curves = {n: r["identity_drift"]["per_segment"] for n, r in results.items()}
    plots.write_drift_png(os.path.join(out, "drift.png"), curves, results[first]["identity_drift"]["other_identity"])
    return blob


def _summary_info(blob: dict) -> dict:
    """What phases.json keeps of an evaluation (the whole of it is eval.json)."""
    return {"lipsync_model": blob["lipsync"]["model"]["peak"], "lipsync_truth": blob["lipsync"]["truth"]["peak"],
            "pose_error_px": blob["pose_error_px"]["model"], "eval_json": "eval.json"}


def _curves(out: str, runs: dict[str, str]) -> None:
    """curves.png: the VAE's reconstruction loss, then the MMDiT's flow-matching loss over the
    three stages one after another."""
    from omnijax.eval import plots
    have = {n: p for n, p in runs.items() if os.path.exists(p)}
    if have:
        plots.write_curves_png(os.path.join(out, "curves.png"), have, keys=("loss",), title="training",
                               panels={"VAE: L1 + L2 reconstruction": ["vae"],
                                       "MMDiT: flow matching (stage 1 -> 2 -> 3)": ["s1", "s2", "s3"]},
                               chain=True)


def enable_compilation_cache() -> str:
    """JAX's persistent compilation cache: the three stages' train steps are the same
    program (the stage only changes the data's keep masks), and a rerun of the demo compiles
    nothing it compiled before. OMNIJAX_CACHE overrides the folder."""
    import jax
    path = os.environ.get("OMNIJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "omnijax", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


def _fmt(x, spec=".2f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def summary(blob: dict, out: str) -> str:
    ls, pe, d = blob["lipsync"], blob["pose_error_px"], blob["identity_drift"]
    lines = [f"[demo] files in {out}: video.mp4  frames.png  eval.json  curves.png",
             f"[demo] lip-sync (peak correlation with the speech): model {ls['model']['peak']:.2f} | "
             f"truth {ls['truth']['peak']:.2f}  vae {ls['vae']['peak']:.2f}  "
             f"no audio {ls['no_audio']['peak']:.2f}  mismatched audio {ls['mismatched']['peak']:.2f}  "
             f"still {ls['still']['peak']:.2f}",
             f"[demo] pose (hand error, px): model {_fmt(pe['model'])} | no pose {_fmt(pe['no_pose'])}  "
             f"truth {_fmt(pe['truth'])}  (hands found in {100 * blob['pose_found']:.0f}% of the model's "
             "frames)",
             f"[demo] identity drift (Lab dE to the reference): first segment {d['per_segment'][0]:.1f}, "
             f"last {d['per_segment'][-1]:.1f}, another identity {d['other_identity']:.1f}; "
             f"seam ratio {blob['seam_ratio']:.2f}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry points

def run_bundled(out: str, model: str, c, progress: bool = True) -> dict:
    """Sample + evaluate an existing export (the bundled model by default) into `out`."""
    phases = Phases(out)
    phases.run("synth", lambda: _synth_heldout_only(c, out), progress)
    info = phases.run("video", lambda: _video(c, out, model), progress)
    phases.run("eval", lambda: _summary_info(_eval(c, out, {"model": model},
                                                   {"model": {**info, "stem": "video"}})), progress)
    blob = json.load(open(os.path.join(out, "eval.json")))
    curves_dir = os.path.join(model, "curves")
    runs = {os.path.splitext(f)[0]: os.path.join(curves_dir, f) for f in sorted(os.listdir(curves_dir))} \
        if os.path.isdir(curves_dir) else {}
    _curves(out, runs)
    return blob


def _synth_heldout_only(c, out: str) -> dict:
    from omnijax.data import synthetic as st
    s = c.synth
    path = os.path.join(out, "data", "heldout")
    shutil.rmtree(path, ignore_errors=True)
    st.generate(st.SynthConfig(size=s.size, fps=s.fps, framing=s.framing, mouth_scale=s.mouth_scale,
                               clips=s.heldout_clips, seed=s.heldout_seed, seconds=s.heldout_seconds,
                               out_of_sync=0.0, occluded=0.0, missing=0.0), path, progress=False)
    return {"heldout": s.heldout_clips}


def run_training(out: str, c, progress: bool = True) -> dict:
    phases = Phases(out)
    phases.run("synth", lambda: _synth(c, out), progress)
    phases.run("vae", lambda: _vae(c, out), progress)
    phases.run("preprocess", lambda: _preprocess(c, out), progress)
    for k in (1, 2, 3):
        phases.run(f"stage{k}", lambda k=k: _stage(c, out, k), progress)
    phases.run("export", lambda: _export(out), progress)
    models = {"s3": os.path.join(out, "models", "s3"), "s2": os.path.join(out, "models", "s2")}
    v3 = phases.run("video", lambda: _video(c, out, models["s3"]), progress)
    v2 = phases.run("video_s2", lambda: _video(c, out, models["s2"], "video_s2.mp4"), progress)
    phases.run("eval", lambda: _summary_info(_eval(c, out, models, {"s3": {**v3, "stem": "video"},
                                                                     "s2": {**v2, "stem": "video_s2"}})), progress)
    blob = json.load(open(os.path.join(out, "eval.json")))
    _curves(out, {n: os.path.join(out, "runs", n, "metrics.jsonl") for n in ("vae", "s1", "s2", "s3")})
    return blob


def bundle(out: str, dest: str = BUNDLED) -> str:
    """A finished `--train` run -> the bundled model: its stage-3 export, the four runs'
    training curves (curves/<run>.jsonl) and the run's evaluation. Built under a temporary
    name and swapped in whole."""
    src = os.path.join(out, "models", "s3")
    for need in (os.path.join(src, "export.json"), os.path.join(out, "eval.json")):
        if not os.path.exists(need):
            raise UsageError(f"--bundle: {need} is missing; the --train run has not finished")
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(os.path.join(tmp, "curves"), ignore_errors=True)
    os.makedirs(os.path.join(tmp, "curves"))
    for run in ("vae", "s1", "s2", "s3"):
        shutil.copy(os.path.join(out, "runs", run, "metrics.jsonl"), os.path.join(tmp, "curves", f"{run}.jsonl"))
    for name in ("eval.json", "phases.json", "frames.png", "curves.png", "drift.png"):
        if os.path.exists(os.path.join(out, name)):
            shutil.copy(os.path.join(out, name), os.path.join(tmp, name))
    old = f"{dest}.old-{os.getpid()}"
    if os.path.exists(dest):
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="omnijax demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: a new demo-<time> folder); reruns resume")
    p.add_argument("--train", action="store_true", help="train everything from scratch (configs/demo.py)")
    p.add_argument("--quick", action="store_true", help="toy sizes, implies --train (plumbing, ~3 min)")
    p.add_argument("--minutes", type=float, help="--train budget in minutes (default 25)")
    p.add_argument("--model", help="sample this export instead of the bundled model")
    p.add_argument("--seconds", type=float, help="length of the held-out video (default: the recipe's, 20 s)")
    p.add_argument("--bundle", action="store_true",
                   help="with --train: make the finished run the bundled demo model (omnijax/assets/demo_model)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.bundle and not a.train:
        raise UsageError("--bundle applies to --train (it bundles the model that run trains)")
    train = a.train or a.quick
    if a.minutes is not None and not train:
        raise UsageError("--minutes applies to --train / --quick")
    if a.model and train:
        raise UsageError("--model samples an existing export; it does not combine with --train/--quick")
    model = a.model or BUNDLED
    if not train:
        from omnijax.sample.bundle import read_meta
        if a.model is None and not os.path.exists(os.path.join(BUNDLED, "export.json")):
            raise UsageError(f"the bundled demo model is missing ({BUNDLED}); run `omnijax demo --train`")
        read_meta(model)
    if a.seconds is not None and not 1.0 <= a.seconds <= 600.0:
        raise UsageError(f"--seconds {a.seconds}: expected 1 to 600 seconds")
    c = load_recipe(a.quick, a.minutes)
    if a.seconds is not None:
        c.synth.heldout_seconds = float(a.seconds)
        c.eval.reference_seconds = min(float(c.eval.reference_seconds), float(a.seconds))
    out = a.out or f"demo-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file, expected a folder")
    os.makedirs(os.path.join(out, "work"), exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    enable_compilation_cache()
    t0 = time.perf_counter()
    blob = run_training(out, c, not a.quiet) if train else run_bundled(out, model, c, not a.quiet)
    print(summary(blob, out))
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s")
    if a.bundle:
        print(f"[demo] bundled -> {bundle(out)}")
    return 0
