"""The Fréchet distance proxy moves the right way: 0 for the same clips, small for the same
people with other gestures and speech (the same distribution), larger the more the clips
are blurred, brightened or frozen; the same number on every call."""

import numpy as np
import pytest

from omnijax.eval import constructed as cx
from omnijax.eval import fd


@pytest.fixture(scope="module")
def sets():
    real = [cx.render(s, 64, 1.0)["frames"] for s in range(4)]
    same = [cx.render(s, 64, 1.0, motion_seed=7)["frames"] for s in range(4)]  # same people, other motion
    return real, same, fd.features(real), fd.features(same)


def test_same_distribution_is_close_and_shifted_ones_are_farther(sets):
    real, same, f_real, f_same = sets
    near = fd.frechet_distance(f_real, f_same)
    assert fd.frechet_distance(f_real, f_real) == pytest.approx(0.0, abs=1e-9)
    blurred = [fd.frechet_distance(f_real, fd.features([cx.blur(c, s) for c in same])) for s in (0.75, 1.5, 3.0)]
    assert near < blurred[0] < blurred[1] < blurred[2], (near, blurred)  # more blur, farther
    assert blurred[1] > 3 * near, (near, blurred)  # a VAE-like blur (1.5 px at 64) stands out
    brighter = fd.frechet_distance(f_real, fd.features([np.clip(c.astype(int) + 30, 0, 255).astype(np.uint8)
                                                       for c in same]))
    frozen = fd.frechet_distance(f_real, fd.features([np.repeat(c[:1], len(c), 0) for c in same]))
    assert brighter > 5 * near and frozen > 2 * near, (near, brighter, frozen)


def test_fd_proxy_is_deterministic_and_seeded(sets):
    real, same, _, _ = sets
    a, b = fd.fd_proxy(real[:2], same[:2]), fd.fd_proxy(real[:2], same[:2])
    assert a == b and a > 0
    assert fd.fd_proxy(real[:2], same[:2], seed=5) != a  # another network, another number
    assert fd.features(real[:1]).shape == (24, 3 * fd.WIDTHS[-1])  # one row per frame pair


def test_fd_resizes_and_checks_inputs(sets):
    real, _, f_real, _ = sets
    small = [c[:, ::2, ::2] for c in real]  # 32 px clips are compared at the same 32x32 input
    assert fd.features(small).shape == f_real.shape
    with pytest.raises(ValueError, match=r"T >= 2"):
        fd.features([real[0][:1]])
    with pytest.raises(ValueError, match="same D"):
        fd.frechet_distance(f_real, f_real[:, :5])
