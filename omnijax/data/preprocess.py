"""Clips -> cached training examples in ArrayRecord shards (`omnijax preprocess`).

For every clip (video with audio, `<clip>.keypoints.json`, `<clip>.txt` caption):
  frames at the target fps -> windows of T = 1 + 4k frames per shape bucket -> centre crop
  to the bucket's aspect, resize -> VAE latents (jitted, batched, normalised) + a
  reference frame's latent + audio features at the frame rate + keypoints (as fractions
  of the window's frame: the model renders its own heatmaps) + text states, with two flags:
    audio_ok  sync score (mouth darkness from pixels vs audio loudness, `sync.py`) passes
    pose_ok   the window's keypoints are visible enough (those in shot: a framing that
              leaves the hips out does not make pose unusable)
  Failing clips are kept and flagged: the curriculum trains them without that condition.
  Each window's reference frame lies outside the window (>= `ref_gap` frames away, a
  seeded choice) when the clip is long enough, so the model cannot learn to copy the target
  through the reference; short clips fall back to the frame farthest outside. The frames
  used are listed per window in the clip info (`window_starts`, `ref_frames`).

Output layout:
    OUT/manifest.json                 counts, shapes, encoder specs, skipped files + reasons
    OUT/<bucket>/shard-00000.array_record   e.g. OUT/t17_h64_w64/shard-00000.array_record
    OUT/_done/shard-00000.json        per-shard completion record (makes re-runs resumable)

Every argument and input is checked before anything is written under OUT: a mistake is
one `UsageError` line (`omnijax preprocess: --vae 'x': ...`), not a traceback or a half-made
output. A clip that cannot be read (corrupt, truncated, no video, too short) is skipped and
listed with its reason, never fatal; a run in which every clip was skipped writes the
manifest (it lists the reasons) and then fails with "no usable clips".

Clips are split (sorted by path) into shards of `clips_per_shard`. A shard's files are
written under temporary names; when all are whole, its old completion record (if any) is
removed, the files are renamed into place and the new record is written, so a crash at any
point leaves either the old shard or a shard that the next run redoes. A re-run skips every
shard whose record is current, and redoes one whose clip list changed or one of whose
skipped files changed (size or mtime: a corrupt clip replaced by a good one is re-tried).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import zlib
from typing import Any, Iterable

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from omnijax.data import keypoints as kpt
from omnijax.data import media, schema, sync
from omnijax.data.preprocess_checks import check_inputs, config_blob, find_clips  # noqa: F401
from omnijax.errors import ArgumentParser, UsageError

log = logging.getLogger(__name__)

AUDIO_RATE = 16000


@dataclasses.dataclass
class PreprocessConfig:
    buckets: tuple[str, ...] = ("17x64x64",)  # FRAMESxHEIGHTxWIDTH
    fps: float = 25.0
    stride: int | None = None  # frames between window starts; None = window length (no overlap)
    audio_encoder: str = "mel"
    text_encoder: str = "bytes"
    pose_min_visible: float = 0.85  # pose_ok threshold on visible (frame, keypoint) entries
    sync_min_score: float = 0.7  # audio_ok threshold
    sync_max_lag: int = 1
    clips_per_shard: int = 8
    batch_size: int = 4  # windows per jitted VAE call (the last batch is padded)
    vae: str = "tiny"  # a VAE preset (random init, seeded) or a directory saved by vae.save
    vae_seed: int = 0
    ref_gap: int = 4  # a window's reference frame is at least this many frames outside it
    ref_seed: int = 0  # seeds the choice among the frames far enough outside

    def bucket_shapes(self) -> list[tuple[int, int, int]]:
        return [schema.parse_bucket(b) for b in self.buckets]


# ----------------------------------------------------------------------------- inputs

def read_caption(video_path: str) -> str:
    path = os.path.splitext(video_path)[0] + ".txt"
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read().strip()


def read_clip_audio(video_path: str, num_frames: int, fps: float) -> tuple[np.ndarray, bool]:
    """Mono 16 kHz audio spanning the clip: from the video, else a .wav/.flac beside it.
    -> (wave, has_audio); a clip without any audio gets silence and has_audio False."""
    try:
        wave, _ = media.read_audio(video_path, AUDIO_RATE)
        return wave, True
    except media.NoAudioError:
        for ext in (".wav", ".flac"):
            side = os.path.splitext(video_path)[0] + ext
            if os.path.exists(side):
                return media.read_audio(side, AUDIO_RATE)[0], True
    return np.zeros(int(np.ceil(num_frames / fps * AUDIO_RATE)), np.float32), False


def resample_keypoints(kp: np.ndarray, kp_fps: float, fps: float, num_frames: int) -> np.ndarray:
    """Keypoints at `kp_fps` -> `num_frames` rows at `fps`: the row nearest each frame's time
    (ties to the later row), the same rule `media.iter_frames` uses for the frames."""
    idx = np.floor(np.arange(num_frames) / fps * kp_fps + 0.5 + 1e-9).astype(np.int64)
    out = kp[np.clip(idx, 0, kp.shape[0] - 1)].copy()
    out[idx >= kp.shape[0], :, 2] = 0.0  # past the sidecar's end: unknown
    return out


# ----------------------------------------------------------------------------- geometry

def choose_buckets(height: int, width: int, shapes: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """All buckets whose aspect ratio is the nearest to the clip's (in log space): one clip
    feeds every resolution / length of its aspect, so a resolution schedule is a weight change."""
    aspect = np.log(width / height)
    dist = [abs(np.log(w / h) - aspect) for _, h, w in shapes]
    best = min(dist)
    return [s for s, d in zip(shapes, dist) if d - best < 1e-6]


def crop_box(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """Centred crop (y0, x0, h, w) of the frame with the output's aspect ratio."""
    if width * out_h > height * out_w:  # frame is wider: crop width
        w = int(round(height * out_w / out_h))
        return 0, (width - w) // 2, height, w
    h = int(round(width * out_h / out_w))
    return (height - h) // 2, 0, h, width


def crop_resize(frames: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 `(T, H, W, 3)` -> centre-cropped, resized uint8 `(T, out_h, out_w, 3)` (antialiased)."""
    y0, x0, h, w = crop_box(frames.shape[1], frames.shape[2], out_h, out_w)
    crop = frames[:, y0:y0 + h, x0:x0 + w]
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(crop)
    return np.stack([np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.BILINEAR)) for f in crop])


def transform_keypoints(kp: np.ndarray, height: int, width: int, out_h: int, out_w: int,
                        scale: float) -> np.ndarray:
    """Keypoints in source pixels -> pixels of the crop resized to (out_h, out_w) x `scale`;
    points outside the crop become invisible."""
    y0, x0, h, w = crop_box(height, width, out_h, out_w)
    out = kp.copy()
    out[..., 0] = (kp[..., 0] - x0) * (out_w / w) * scale
    out[..., 1] = (kp[..., 1] - y0) * (out_h / h) * scale
    inside = (kp[..., 0] >= x0) & (kp[..., 0] < x0 + w) & (kp[..., 1] >= y0) & (kp[..., 1] < y0 + h)
    out[..., 2] = np.where(inside, kp[..., 2], 0.0)
    return out


# ----------------------------------------------------------------------------- encoders

@functools.partial(jax.jit, static_argnums=0)
def _encode_normalized(graphdef, state, video):
    """(B, T, H, W, 3) float [-1, 1] -> normalised latents. Module level, keyed on the
    graphdef, so a re-run in the same process reuses the compiled program."""
    from flax import nnx

    vae = nnx.merge(graphdef, state)
    return vae.normalize(vae.encode(video))


def build_vae(preset: str, seed: int):
    """A VAE preset with seeded random weights (the VAE initialises on the host, in seconds).

    Preprocess uses a random VAE only for tests and demos: real runs pass a VAE directory.
    """
    from flax import nnx

    from omnijax.models import vae as vae_lib

    return vae_lib.CausalVAE(vae_lib.VAEConfig.preset(preset), rngs=nnx.Rngs(seed))


class FeatureEncoders:
    """The frozen encoders preprocess runs: VAE (jitted, fixed batch), audio, text."""

    def __init__(self, cfg: PreprocessConfig):
        from flax import nnx

        from omnijax.models import vae as vae_lib
        from omnijax.models.encoders import get_audio_encoder, get_text_encoder

        self.vae = vae_lib.load(cfg.vae) if os.path.isdir(cfg.vae) else build_vae(cfg.vae, cfg.vae_seed)
        self.audio = get_audio_encoder(cfg.audio_encoder)
        self.text = get_text_encoder(cfg.text_encoder)
        self.batch_size = cfg.batch_size
        self._graphdef, self._state = nnx.split(self.vae)

    def latents(self, videos: np.ndarray) -> np.ndarray:
        """`(N, T, H, W, 3)` uint8 -> normalised latents `(N, F, h, w, z)` in fixed-size batches."""
        n, b = videos.shape[0], self.batch_size
        out = []
        for i in range(0, n, b):
            chunk = media.to_float(videos[i:i + b])
            pad = b - chunk.shape[0]
            if pad:  # one compiled shape per bucket: pad the last batch with copies
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            self.vae.check_video(chunk)
            out.append(np.asarray(_encode_normalized(self._graphdef, self._state, chunk))[: b - pad])
        return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- one clip

def choose_ref_frames(n: int, starts: list[int], T: int, gap: int, rng: np.random.Generator) -> list[int]:
    """The reference frame of each window `[s, s + T)` of an `n`-frame clip.

    A reference inside the window (or next to it) lets the model copy the target instead of
    learning to animate the person, so each window gets a seeded choice among the frames at
    least `gap` frames outside it. A clip too short for that gets the frame farthest outside
    the window; when the window is the whole clip, its last frame (the first frame's latent
    IS the window's first latent under the causal VAE: the worst copy)."""
    frames = np.arange(n)
    out = []
    for s in starts:
        dist = np.maximum(s - frames, frames - (s + T - 1))  # frames outside: 1, 2, ...; inside: <= 0
        far = frames[dist >= gap]
        if far.size:
            out.append(int(rng.choice(far)))
        else:
            best = frames[dist == dist.max()]
            out.append(int(best[np.argmax(np.abs(best - s))]))
    return out


@dataclasses.dataclass
class ClipResult:
    examples: dict[str, list[dict[str, np.ndarray]]]  # bucket name -> examples
    info: dict[str, Any]


def process_clip(path: str, cfg: PreprocessConfig, enc: FeatureEncoders) -> ClipResult:
    """One clip -> its examples per bucket. Raises media.MediaError for unusable input."""
    # Stream the frames once: full-resolution frames are never held together, only the
    # per-frame mouth signal and each bucket's small resized copy (long clips fit).
    info0 = media.probe(path)
    H, W = info0.height, info0.width
    buckets = choose_buckets(H, W, cfg.bucket_shapes())
    resized: dict[tuple[int, int, int], list[np.ndarray]] = {b: [] for b in buckets}
    mouth = []
    for frame in media.iter_frames(path, cfg.fps):
        if frame.shape[:2] != (H, W):
            raise media.MediaError(f"{path}: frame size changes mid-clip ({frame.shape[:2]} vs {(H, W)})")
        mouth.append(sync.mouth_signal(frame[None])[0])
        for b in buckets:
            resized[b].append(crop_resize(frame[None], b[1], b[2])[0])
    n = len(mouth)
    if n == 0:
        raise media.MediaError(f"{path}: no decodable video frames")
    wave, has_audio = read_clip_audio(path, n, cfg.fps)
    score, lag = sync.lagged_correlation(sync.loudness_envelope(wave, AUDIO_RATE, cfg.fps, n),
                                         np.asarray(mouth), cfg.sync_max_lag)
    audio_ok = bool(has_audio and score >= cfg.sync_min_score)
    side = kpt.sidecar_path(path)
    if os.path.exists(side):
        kp_src, kp_fps = kpt.load_keypoints(side)
        kp = resample_keypoints(kp_src, kp_fps, cfg.fps, n)
        has_kp = True
    else:
        kp = np.zeros((n, kpt.NUM_KEYPOINTS, 3), np.float32)
        has_kp = False
    audio_feats = enc.audio(wave, AUDIO_RATE, cfg.fps, n)  # (n, Da)
    text, text_mask = enc.text([read_caption(path)])
    examples: dict[str, list] = {}
    starts_of: dict[str, list[int]] = {}
    refs_of: dict[str, list[int]] = {}
    for T, h, w in buckets:
        stride = cfg.stride or T
        starts = list(range(0, n - T + 1, stride))
        if not starts:
            continue
        video = np.stack(resized[(T, h, w)])
        kp_b = transform_keypoints(kp, H, W, h, w, 1.0)     # pixels of the bucket's frame
        windows = np.stack([video[s:s + T] for s in starts])
        lat = enc.latents(windows)
        # Seeded by name and bucket, not by path: the same clip gets the same references
        # wherever it lives.
        rng = np.random.default_rng([cfg.ref_seed, zlib.crc32(os.path.basename(path).encode()), T, h, w])
        refs = choose_ref_frames(n, starts, T, cfg.ref_gap, rng)
        uniq, pos = np.unique(refs, return_inverse=True)
        ref_lat = enc.latents(video[uniq][:, None])  # (U, 1, h, w, z): one single-frame encode each
        out = []
        for j, s in enumerate(starts):
            kw = kp_b[s:s + T]
            pose_ok = bool(has_kp and kpt.visible_fraction(kw, h, w) >= cfg.pose_min_visible)
            out.append({
                "latents": lat[j], "ref_latent": ref_lat[pos[j]],
                "audio": audio_feats[s:s + T].astype(np.float32),
                "keypoints": kpt.normalize(kw, h, w),
                "text": text[0], "text_mask": text_mask[0],
                "audio_ok": np.bool_(audio_ok), "pose_ok": np.bool_(pose_ok),
            })
        name = schema.bucket_name(T, h, w)
        examples[name], starts_of[name], refs_of[name] = out, starts, refs
    info = {"file": path, "frames": n, "height": H, "width": W, "sync_score": round(float(score), 4),
            "sync_lag": lag, "audio_ok": audio_ok, "has_audio": has_audio, "has_keypoints": has_kp,
            "windows": {k: len(v) for k, v in examples.items()},
            "window_starts": starts_of, "ref_frames": refs_of}
    if not examples:
        shortest = min(t for t, _, _ in cfg.bucket_shapes())
        raise media.MediaError(f"{path}: clip is shorter than asked: {n} frames at {cfg.fps} fps, "
                               f"the shortest bucket needs {shortest}")
    return ClipResult(examples, info)


# ----------------------------------------------------------------------------- shards

def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _write_array_record(path: str, records: Iterable[bytes]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(path, "group_size:1")
    count = 0
    for r in records:
        writer.write(r)
        count += 1
    writer.close()
    return count


def write_records(path: str, records: Iterable[bytes]) -> int:
    """Records -> `path` via a temporary file renamed when whole. -> count."""
    count = _write_array_record(path + ".tmp", records)
    os.replace(path + ".tmp", path)
    return count


def _stamp(path: str) -> dict:
    """Size and mtime of a file (None when it is gone): how a re-run sees that it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return {"size": None, "mtime_ns": None}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stale(record: dict, members: list[str], rel: list[str]) -> str | None:
    """Why a shard that has a completion record must be redone; None when it is current.

    Clips are compared by path relative to --clips, so the same tree under another name
    or working directory still resumes."""
    if record.get("members") != rel:
        return "its clip list changed"
    path_of = dict(zip(rel, members))
    for s in record["skipped"]:
        path = path_of[s["member"]]
        if _stamp(path) != {"size": s.get("size"), "mtime_ns": s.get("mtime_ns")}:
            return f"{path} changed since it was skipped"
    return None


def _do_shard(k: int, members: list[str], rel: list[str], out: str, cfg: PreprocessConfig,
              enc: FeatureEncoders, bar, old: dict | None) -> None:
    """Encode one shard's clips and commit its files and completion record."""
    by_bucket: dict[str, list[bytes]] = {}
    infos, skipped = [], []
    for path, r in zip(members, rel):
        stamp = _stamp(path)  # taken before reading: a file replaced mid-read is re-tried next run
        try:
            res = process_clip(path, cfg, enc)
        except (media.MediaError, ValueError, OSError) as e:
            log.warning("skipping %s: %s", path, e)
            skipped.append({"file": path, "member": r, "reason": str(e)} | stamp)
        else:
            infos.append(res.info)
            for name, exs in res.examples.items():
                by_bucket.setdefault(name, []).extend(schema.encode(ex) for ex in exs)
        bar.update(1)
    shard = _shard_name(k)
    done = os.path.join(out, "_done", shard + ".json")
    staged, counts = [], {}
    for name, recs in by_bucket.items():  # every file whole under a temporary name first
        os.makedirs(os.path.join(out, name), exist_ok=True)
        final = os.path.join(out, name, shard + ".array_record")
        counts[name] = _write_array_record(final + ".tmp", recs)
        staged.append((final + ".tmp", final))
    # Commit. The old record goes first: until the new one is written the shard counts as
    # not done (the next run redoes it), so a record never describes files it did not write.
    if os.path.exists(done):
        os.remove(done)
    for tmp, final in staged:
        os.replace(tmp, final)
    for name in set((old or {}).get("records", {})) - set(counts):  # a bucket it no longer feeds
        gone = os.path.join(out, name, shard + ".array_record")
        if os.path.exists(gone):
            os.remove(gone)
    with open(done + ".tmp", "w") as f:
        json.dump({"shard": k, "clips": members, "members": rel, "records": counts,
                   "clip_info": infos, "skipped": skipped}, f, indent=1)
    os.replace(done + ".tmp", done)


def run(clips_root: str, out: str, cfg: PreprocessConfig, progress: bool = True, *,
        worker_index: int = 0, num_workers: int = 1) -> dict:
    """Preprocess every clip under `clips_root` into `out`; -> the manifest (also written).

    With `num_workers` > 1, this call does shards k with k % num_workers == worker_index
    (run one per host or process on shared storage); whichever worker finds every shard
    done writes the manifest, the others return {"pending_shards": [...]}.
    Raises UsageError for bad arguments or inputs (before writing anything), and after
    writing the manifest when no clip gave an example."""
    clips = check_inputs(clips_root, out, cfg, worker_index, num_workers)
    os.makedirs(os.path.join(out, "_done"), exist_ok=True)
    cfg_path = os.path.join(out, "preprocess_config.json")
    if not os.path.exists(cfg_path):  # (an existing one was compared by check_inputs)
        tmp = f"{cfg_path}.{worker_index}.tmp"
        with open(tmp, "w") as f:
            json.dump(config_blob(cfg), f, indent=1)
        os.replace(tmp, cfg_path)
    rel = [os.path.relpath(p, clips_root) for p in clips]
    per = cfg.clips_per_shard
    n_shards = -(-len(clips) // per)
    mine = [k for k in range(n_shards) if k % num_workers == worker_index]
    bar = tqdm(total=sum(len(clips[k * per:(k + 1) * per]) for k in mine), desc="preprocess",
               unit="clip", disable=not progress)
    enc, resumed, redone = None, 0, 0
    for k in mine:
        members, members_rel = clips[k * per:(k + 1) * per], rel[k * per:(k + 1) * per]
        done = os.path.join(out, "_done", _shard_name(k) + ".json")
        old = None
        if os.path.exists(done):
            with open(done) as f:
                old = json.load(f)
            why = _stale(old, members, members_rel)
            if why is None:
                resumed += 1
                bar.update(len(members))
                continue
            log.info("redoing shard %d: %s", k, why)
            redone += 1
        enc = enc or FeatureEncoders(cfg)
        _do_shard(k, members, members_rel, out, cfg, enc, bar, old)
    bar.close()
    pending = [k for k in range(n_shards) if not os.path.exists(os.path.join(out, "_done", _shard_name(k) + ".json"))]
    if pending:
        return {"pending_shards": pending, "resumed_shards": resumed, "redone_shards": redone}
    manifest = build_manifest(out, cfg, n_shards)
    if not manifest["records"]:
        raise UsageError(f"no usable clips: {manifest['clips']['skipped']} skipped, "
                         f"see {os.path.join(out, 'manifest.json')}")
    return manifest | {"resumed_shards": resumed, "redone_shards": redone}


def build_manifest(out: str, cfg: PreprocessConfig, n_shards: int) -> dict:
    """Gather the per-shard completion records into OUT/manifest.json."""
    buckets: dict[str, dict] = {}
    skipped, infos = [], []
    for k in range(n_shards):
        with open(os.path.join(out, "_done", _shard_name(k) + ".json")) as f:
            d = json.load(f)
        skipped += d["skipped"]
        infos += d["clip_info"]
        for name, count in d["records"].items():
            T, h, w = schema.parse_bucket(name)
            b = buckets.setdefault(name, {"frames": T, "height": h, "width": w, "records": 0, "shards": []})
            b["records"] += count
            b["shards"].append(os.path.join(name, _shard_name(k) + ".array_record"))
    for name, b in buckets.items():
        b["shapes"] = _feature_shapes(os.path.join(out, b["shards"][0]))
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "config": config_blob(cfg),
        "encoders": {"audio": cfg.audio_encoder, "text": cfg.text_encoder, "vae": cfg.vae,
                     "vae_seed": cfg.vae_seed},
        "buckets": buckets,
        "clips": {"total": len(infos) + len(skipped), "used": len(infos), "skipped": len(skipped),
                  "audio_ok": sum(i["audio_ok"] for i in infos),
                  "no_audio": sum(not i["has_audio"] for i in infos),
                  "no_keypoints": sum(not i["has_keypoints"] for i in infos)},
        "records": sum(b["records"] for b in buckets.values()),
        "skipped": skipped,
        "clip_info": infos,
    }
    tmp = os.path.join(out, f"manifest.json.{os.getpid()}.tmp")  # parallel workers may race here
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out, "manifest.json"))
    return manifest


def _feature_shapes(shard: str) -> dict[str, list[int]]:
    from array_record.python.array_record_module import ArrayRecordReader

    r = ArrayRecordReader(shard)
    ex = schema.decode(r.read([0])[0])
    r.close()
    return {k: list(v.shape) for k, v in ex.items()}


def read_manifest(data_dir: str) -> dict:
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{data_dir}: no manifest.json; run `omnijax preprocess` first")
    with open(path) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="omnijax preprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", required=True, help="directory of clips (searched recursively) or one file")
    p.add_argument("--out", required=True, help="output directory for shards + manifest.json")
    p.add_argument("--bucket", action="append", dest="buckets",
                   help="FRAMESxHEIGHTxWIDTH (repeatable), default 17x64x64")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--stride", type=int, default=None, help="frames between windows (default: window length)")
    p.add_argument("--vae", default="tiny",
                   help="a directory saved by vae.save / `omnijax convert wan-vae`, or a preset name "
                        "(random weights: tests and demos only)")
    p.add_argument("--vae-seed", type=int, default=0)
    p.add_argument("--audio-encoder", default="mel", help="spec, e.g. mel or wav2vec2:PATH")
    p.add_argument("--text-encoder", default="bytes", help="spec, e.g. bytes or t5:PATH")
    p.add_argument("--pose-min-visible", type=float, default=0.85)
    p.add_argument("--sync-min-score", type=float, default=0.7)
    p.add_argument("--ref-gap", type=int, default=4,
                   help="frames between a window and its reference frame (when the clip is long enough)")
    p.add_argument("--ref-seed", type=int, default=0, help="seeds the choice of reference frames")
    p.add_argument("--clips-per-shard", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--worker-index", type=int, default=0, help="this worker's index (parallel preprocess)")
    p.add_argument("--num-workers", type=int, default=1, help="workers sharing the shards (one per host)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = PreprocessConfig(buckets=tuple(a.buckets or ("17x64x64",)), fps=a.fps, stride=a.stride,
                           audio_encoder=a.audio_encoder, text_encoder=a.text_encoder,
                           pose_min_visible=a.pose_min_visible,
                           sync_min_score=a.sync_min_score, clips_per_shard=a.clips_per_shard,
                           batch_size=a.batch_size, vae=a.vae, vae_seed=a.vae_seed,
                           ref_gap=a.ref_gap, ref_seed=a.ref_seed)
    m = run(a.clips, a.out, cfg, worker_index=a.worker_index, num_workers=a.num_workers)
    if "pending_shards" in m:
        print(f"worker {a.worker_index}/{a.num_workers} done; shards {m['pending_shards']} still pending "
              "(the last worker to finish writes manifest.json)")
        return 0
    print(f"{m['records']} examples in {len(m['buckets'])} bucket(s) from {m['clips']['used']} clips; "
          f"{m['clips']['skipped']} skipped, {m['clips']['audio_ok']} passed the sync filter "
          f"-> {os.path.join(a.out, 'manifest.json')}")
    return 0
