"""Flow-matching samplers against diffusers: sigmas, single updates, whole trajectories,
evaluation counts; jit compiles once; straight paths are exact; Heun / UniPC are 2nd order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnijax.diffusion import sampler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CASES = [(1, 1.0), (2, 3.0), (10, 3.0), (25, 5.0), (50, 1.0), (7, 1.7)]
SHAPE = (2, 3, 2, 3, 4)        # (B, F, h, w, c)


def _scheduler(solver, num_steps, shift):
    if solver == "euler":
        s = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    elif solver == "heun":
        s = diffusers.FlowMatchHeunDiscreteScheduler(shift=shift)
    else:  # Wan's pipeline config
        s = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                              flow_shift=shift, solver_type="bh2", solver_order=2)
    s.set_timesteps(num_steps)
    return s


# A small tanh MLP of (x, sigma) over the channel axis, the same weights in jax and torch.
_rs = np.random.RandomState(0)
W1 = (_rs.randn(SHAPE[-1], 16) / 2).astype(np.float32)
C1 = _rs.randn(16).astype(np.float32)
W2 = (_rs.randn(16, SHAPE[-1]) / 4).astype(np.float32)


def _mlp_jax(params, x, sigma):
    w1, c1, w2 = params
    return jnp.tanh(x @ w1 + sigma * c1) @ w2 - 0.5 * x


def _mlp_torch(x, sigma):
    w1, c1, w2 = (torch.from_numpy(a) for a in (W1, C1, W2))
    return torch.tanh(x @ w1 + sigma * c1) @ w2 - 0.5 * x


def _velocity(x, sigma, step):
    return _mlp_jax((W1, C1, W2), x, sigma)


def _noise(seed=1):
    return np.random.RandomState(seed).randn(*SHAPE).astype(np.float32)


def _diffusers_trajectory(solver, num_steps, shift, x):
    """diffusers' sampling loop; the model sees the scheduler's own sigma of each call."""
    sched = _scheduler(solver, num_steps, shift)
    x, out = torch.from_numpy(x), []
    for k, t in enumerate(sched.timesteps):
        x = sched.step(_mlp_torch(x, sched.sigmas[k]), t, x).prev_sample
        out.append(x.numpy())
    return out


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("solver", sampler.SOLVERS)
@pytest.mark.parametrize("num_steps,shift", CASES)
def test_sigmas_equal_diffusers(solver, num_steps, shift):
    ref = _scheduler(solver, num_steps, shift).sigmas.numpy()
    if solver == "heun":  # diffusers repeats each inner sigma (predictor, corrector)
        ref = np.concatenate([ref[:1], ref[1:-1:2], ref[-1:]])
    ours = sampler.sigmas(solver, num_steps, shift)
    assert ours.dtype == np.float32 and ours.shape == (num_steps + 1,)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=0)
    assert ours[-1] == 0 and np.all(np.diff(ours) < 0)


def test_unipc_sigmas_are_not_eulers():
    # UniPC drops the last point of an (n + 1)-grid; Euler ends at the twice-shifted 1/1000.
    e, u = sampler.sigmas("euler", 10, 1.0), sampler.sigmas("unipc", 10, 1.0)
    assert e[0] == 1.0 and u[0] == np.float32(1 - 1e-6)
    np.testing.assert_allclose([e[-2], u[-2]], [0.001, 0.1009], rtol=1e-5)


@pytest.mark.parametrize("solver", sampler.SOLVERS)
@pytest.mark.parametrize("num_steps,shift", [(1, 1.0), (10, 3.0), (25, 5.0)])
def test_evaluations_are_where_and_as_many_as_diffusers(solver, num_steps, shift):
    sched = _scheduler(solver, num_steps, shift)
    n = len(sched.timesteps)
    assert sampler.num_evaluations(solver, num_steps) == n
    table = sampler.schedule(solver, num_steps, shift)
    np.testing.assert_array_equal(table["sigma"], sched.sigmas.numpy()[:n])
    # and denoise, jitted, really calls the model there, in order
    seen = []

    def velocity(x, sigma, step):
        jax.debug.callback(lambda s, k: seen.append((float(s), int(k))), sigma, step,
                           ordered=True)
        return -x

    jax.jit(lambda x: sampler.denoise(velocity, x, solver=solver, num_steps=num_steps,
                                      shift=shift))(jnp.ones((2,)))
    jax.effects_barrier()
    assert [s for s, _ in seen] == [float(s) for s in table["sigma"]]
    steps = [k for _, k in seen]
    assert steps == sorted(steps) and steps[-1] == num_steps - 1 and len(set(steps)) == num_steps


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_one_euler_step_equals_diffusers(shift):
    x, v = _noise(1), _noise(2)
    for k in (0, 4, 9):          # 9 lands on sigma = 0
        sched = _scheduler("euler", 10, shift)
        sched.set_begin_index(k)
        ref = sched.step(torch.from_numpy(v), sched.timesteps[k], torch.from_numpy(x)).prev_sample
        row = {a: b[k] for a, b in sampler.schedule("euler", 10, shift).items()}
        ours, _ = sampler.euler_step(jnp.asarray(x), jnp.asarray(v), (), row)
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_one_heun_step_equals_diffusers(shift):
    # A Heun step is two scheduler.step calls: predict with v at x, correct with v at the
    # Euler point. Start the scheduler at step 3 of 10 (evaluation 6).
    sched = _scheduler("heun", 10, shift)
    table = sampler.schedule("heun", 10, shift)
    x = _noise(1)
    sched.set_begin_index(6)
    xt, carry, xj = torch.from_numpy(x), sampler.init_carry("heun", jnp.asarray(x)), jnp.asarray(x)
    for k in (6, 7):
        xt = sched.step(_mlp_torch(xt, sched.sigmas[k]), sched.timesteps[k], xt).prev_sample
        row = {a: b[k] for a, b in table.items()}
        xj, carry = sampler.heun_step(xj, _velocity(xj, row["sigma"], 3), carry, row)
        assert _rel(xj, xt.numpy()) < 1e-6
    assert sched.state_in_first_order          # a whole step went by
    # and that is the textbook trapezoid on sigma_3 -> sigma_4
    s3, s4 = sampler.sigmas("heun", 10, shift)[3:5]
    v1 = _velocity(x, s3, 3)
    v2 = _velocity(x + (s4 - s3) * v1, s4, 3)
    np.testing.assert_allclose(xj, x + (s4 - s3) * 0.5 * (v1 + v2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_steps,shift", [(1, 1.0), (2, 3.0), (3, 1.0), (10, 3.0), (25, 5.0)])
def test_unipc_steps_equal_diffusers_step_by_step(num_steps, shift):
    # the multistep history (and the corrector applied at the next call) matters: compare
    # every intermediate sample.
    ref = _diffusers_trajectory("unipc", num_steps, shift, _noise(3))
    table = sampler.schedule("unipc", num_steps, shift)
    x = jnp.asarray(_noise(3))
    carry = sampler.init_carry("unipc", x)
    for k in range(num_steps):
        row = {a: b[k] for a, b in table.items()}
        x, carry = sampler.unipc_step(x, _velocity(x, row["sigma"], k), carry, row)
        assert _rel(x, ref[k]) < 2e-6, k


@pytest.mark.parametrize("solver", sampler.SOLVERS)
@pytest.mark.parametrize("num_steps,shift", [(1, 1.0), (2, 3.0), (10, 3.0), (25, 5.0), (50, 1.0)])
def test_whole_trajectory_equals_diffusers(solver, num_steps, shift):
    x = _noise(4)
    ref = _diffusers_trajectory(solver, num_steps, shift, x)[-1]
    ours = jax.jit(functools.partial(sampler.denoise, _velocity, solver=solver,
                                     num_steps=num_steps, shift=shift))(x)
    assert ours.dtype == jnp.float32 and ours.shape == SHAPE
    assert _rel(ours, ref) < 1e-5


@pytest.mark.parametrize("solver", sampler.SOLVERS)
def test_jitted_denoise_compiles_once_per_shape(solver):
    traces = []

    @jax.jit
    def generate(params, x):
        def velocity(x, sigma, step):
            traces.append(step)            # runs at trace time only
            return _mlp_jax(params, x, sigma)
        return sampler.denoise(velocity, x, solver=solver, num_steps=4, shift=3.0)

    params = tuple(jnp.asarray(a) for a in (W1, C1, W2))
    a = generate(params, _noise(5))
    b = generate(tuple(p * 1.1 for p in params), _noise(6))
    assert generate._cache_size() == 1 and len(traces) == 1  # one compile, model traced once
    assert not np.allclose(a, b)
    generate(params, np.zeros((1, 2, 2, 2, 4), np.float32))   # a new shape does compile
    assert generate._cache_size() == 2


@pytest.mark.parametrize("solver", sampler.SOLVERS)
@pytest.mark.parametrize("num_steps", [1, 3, 20])
def test_straight_path_is_recovered_exactly(solver, num_steps):
    x0, eps = _noise(7), _noise(8)
    v = jnp.asarray(eps - x0)
    out = sampler.denoise(lambda x, s, k: v, eps, solver=solver, num_steps=num_steps, shift=3.0)
    np.testing.assert_allclose(out, x0, atol=1e-5)


def _rk4_reference(f, x, s0, m=2000):
    x = x.astype(np.float64)
    grid = np.linspace(s0, 0.0, m + 1)
    for a, b in zip(grid[:-1], grid[1:]):
        h = b - a
        k1 = f(x, a)
        k2 = f(x + h / 2 * k1, a + h / 2)
        k3 = f(x + h / 2 * k2, a + h / 2)
        k4 = f(x + h * k3, b)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_heun_and_unipc_are_second_order_euler_first():
    # a curved field (the exact flow of a trained model is not straight)
    def field(x, s, xp=np):
        return xp.sin(3 * s) * x + xp.cos(2 * x)

    x = np.random.RandomState(9).randn(64).astype(np.float32)
    steps = (8, 16, 32)
    err = {}
    for solver in sampler.SOLVERS:
        ref = _rk4_reference(field, x, float(sampler.sigmas(solver, 8, 1.0)[0]))
        err[solver] = np.array([np.abs(np.asarray(jax.jit(functools.partial(
            sampler.denoise, lambda x, s, k: field(x, s, jnp), solver=solver, num_steps=n,
            shift=1.0))(x)) - ref).max() for n in steps])
    order = {k: np.log2(e[:-1] / e[1:]) for k, e in err.items()}
    assert np.all((order["euler"] > 0.8) & (order["euler"] < 1.3)), order
    assert np.all(order["heun"] > 1.7) and np.all(order["unipc"] > 1.7), order
    assert err["heun"][-1] < err["euler"][-1] / 10 and err["unipc"][-1] < err["euler"][-1] / 10


def test_errors_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"'ddim'.*euler, heun, unipc"):
        sampler.sigmas("ddim", 10, 1.0)
    with pytest.raises(ValueError, match=r"'ddim'.*euler, heun, unipc"):
        sampler.denoise(_velocity, _noise(), solver="ddim", num_steps=10, shift=1.0)
    with pytest.raises(ValueError, match=r"got 0.*euler, heun, unipc"):
        sampler.num_evaluations("euler", 0)
    with pytest.raises(ValueError, match=r"got 2.5"):
        sampler.schedule("unipc", 2.5, 1.0)
    with pytest.raises(ValueError, match=r"shift must be > 0, got -1"):
        sampler.sigmas("heun", 4, -1.0)
    with pytest.raises(ValueError, match=r"velocity_fn returned \(3,\)"):
        sampler.denoise(lambda x, s, k: jnp.zeros(3), jnp.zeros((2,)), solver="euler",
                        num_steps=2, shift=1.0)
