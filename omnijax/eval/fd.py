"""A Fréchet distance *proxy* between sets of videos, with a fixed random network.

This is not FVD: FVD uses an I3D network trained on Kinetics-400 (`omnijax.eval.real.fvd`,
the `eval` extra, is the real one). Without trained weights, features come from a small fixed
convolutional network with seeded random weights (random ReLU features still separate
distributions of images by their local colour, edge and texture statistics), applied to

- each frame (appearance), and
- each frame-to-frame difference (motion), with its own weights,

at a fixed 32x32 resolution. Each (frame, next frame) pair of every clip is one sample;
a Gaussian is fitted to each set's samples and the Fréchet distance between the two is

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

Numbers are comparable only between runs of this module with the same seed and size:
lower is closer, 0 for identical sets. Compare a model against references computed the
same way (e.g. the VAE reconstruction of the truth), never against published FVD.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy import ndimage

SIZE = 32  # frames are resized to SIZE x SIZE before the network
WIDTHS = (16, 32, 64)  # channels of the three stride-2 3x3 convolutions
SEED = 0


def _one_blas_thread():
    """Single-threaded BLAS for these small matrices (<= 192 wide): on a busy machine a
    multi-threaded OpenBLAS QR/SVD of this size was measured 100x slower than one thread.
    threadpoolctl comes with librosa's scikit-learn; without it, nothing is limited."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _weights(seed: int, in_ch: int = 3) -> list[np.ndarray]:
    """He-normal 3x3 kernels `(3, 3, C_in, C_out)` for each layer, fixed by the seed."""
    rng = np.random.default_rng(seed)
    out, c = [], in_ch
    for w in WIDTHS:
        out.append(rng.standard_normal((3, 3, c, w)) * np.sqrt(2.0 / (9 * c)))
        c = w
    return out


def _conv_s2(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """`(N, H, W, C)` -> `(N, H/2, W/2, O)`: 3x3 convolution, stride 2, zero padding 1."""
    N, H, W, C = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # im2col: the 9 taps side by side, then one matmul
    cols = np.concatenate([xp[:, i:i + H:2, j:j + W:2] for i in range(3) for j in range(3)], axis=-1)
    return cols @ k.reshape(9 * C, -1)


def _net(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """`(N, SIZE, SIZE, 3)` -> `(N, WIDTHS[-1])`: ReLU convs, then the spatial mean."""
    for k in weights:
        x = np.maximum(_conv_s2(x, k), 0.0)
    return x.mean(axis=(1, 2))


def _resize(frames: np.ndarray) -> np.ndarray:
    """uint8 `(T, H, W, 3)` -> float64 `(T, SIZE, SIZE, 3)` in [-1, 1] (anti-aliased)."""
    f = np.asarray(frames, np.float64) / 127.5 - 1.0
    T, H, W, _ = f.shape
    if (H, W) == (SIZE, SIZE):
        return f
    sy, sx = H / SIZE, W / SIZE
    # blur by about half the shrink factor first, so downsampling does not alias
    f = ndimage.gaussian_filter(f, (0, max(0.0, sy / 2 - 0.25), max(0.0, sx / 2 - 0.25), 0))
    return ndimage.zoom(f, (1, SIZE / H, SIZE / W, 1), order=1, grid_mode=True, mode="nearest")


def _detail(x: np.ndarray) -> np.ndarray:
    """What blur removes: the frame minus its Gaussian blur (sigma 1 px at SIZE)."""
    return x - ndimage.gaussian_filter(x, (0, 1.0, 1.0, 0))


def features(clips, seed: int = SEED, chunk: int = 256) -> np.ndarray:
    """Clips (a sequence of uint8 `(T, H, W, 3)`, T >= 2, or one `(N, T, H, W, 3)` array) ->
    features `(sum of T - 1, 3 * WIDTHS[-1])` per frame pair (t, t+1): the network applied
    to frame t+1 (colour and layout), to its detail (frame minus blur: sharpness, which
    spatial means of ReLU features of the frame alone barely see), and to the change from
    frame t (motion), each stream with its own seeded weights."""
    with _one_blas_thread():
        return _features(clips, seed, chunk)


def _features(clips, seed: int, chunk: int) -> np.ndarray:
    w_app, w_det, w_mot = _weights(seed), _weights(seed + 1), _weights(seed + 2)
    rows = []
    for i, clip in enumerate(clips):
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] < 2:
            raise ValueError(f"clip {i}: expected uint8 (T, H, W, 3) with T >= 2, got shape {clip.shape}")
        x = _resize(clip)
        for s in range(1, x.shape[0], chunk):
            cur = x[s:s + chunk]
            prev = x[s - 1:s - 1 + cur.shape[0]]
            rows.append(np.concatenate([_net(cur, w_app), _net(4.0 * _detail(cur), w_det),
                                        _net(4.0 * (cur - prev), w_mot)], axis=1))
    if not rows:
        raise ValueError("expected at least one clip")
    return np.concatenate(rows)


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features `(N_a, D)` and `(N_b, D)`.

    With A, B the centred features over sqrt(N - 1) (so S_a = A^T A), the cross term
    tr((S_a^1/2 S_b S_a^1/2)^1/2) is the sum of the singular values of A B^T, which equal
    those of R_a R_b^T for the QR factors of A and B: one SVD of at most D x D, no matrix
    square roots (which lose the small eigenvalues, and cost two eigendecompositions)."""
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1] or min(len(fa), len(fb)) < 2:
        raise ValueError(f"expected features (N >= 2, D) with the same D, got {fa.shape} and {fb.shape}")
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    A = (fa - mu_a) / np.sqrt(len(fa) - 1)
    B = (fb - mu_b) / np.sqrt(len(fb) - 1)
    with _one_blas_thread():
        ra, rb = np.linalg.qr(A, mode="r"), np.linalg.qr(B, mode="r")
        cross = np.linalg.svd(ra @ rb.T, compute_uv=False).sum()
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.sum(A * A) + np.sum(B * B) - 2 * cross))


def fd_proxy(real_clips, generated_clips, seed: int = SEED) -> float:
    """Real and generated clips (sequences of uint8 `(T, H, W, 3)`) -> Fréchet distance of
    their random-network features (a proxy, not FVD; see the module docstring). 0 = same."""
    with _one_blas_thread():
        return frechet_distance(features(real_clips, seed), features(generated_clips, seed))
