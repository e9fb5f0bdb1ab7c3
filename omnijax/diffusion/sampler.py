"""Flow-matching samplers (Euler, Heun, UniPC) as schedules plus pure step functions.

Conventions are flow.py's (and diffusers' flow schedulers'):

    x_t = (1 - t) x0 + t eps,   t = sigma in [0, 1] (1 is noise),   v = eps - x0,

and the model takes sigma itself (no x1000). Sampling integrates dx/dsigma = v from the
first sigma down to 0.

A sampler is two things:
  * a schedule: `schedule(solver, num_steps, shift)` -> numpy tables with one row per
    model evaluation (where to evaluate, which solver step it belongs to, the update's
    coefficients). Everything that depends only on the sigmas is computed here, once, in
    float64 from the float32 sigmas; it is static data under jit.
  * a step: `step(x, v, carry, row) -> (x_next, carry)`, elementwise float32 jnp math
    over the sample, the velocity at it, and a small history pytree.

`denoise` is one `lax.fori_loop` over the table rows that calls the velocity function
exactly once per iteration, for every solver: the model is traced once (Heun's two
evaluations per step are two loop iterations), and the compiled program depends only on
the shapes, so a jitted segment function compiles once.

The sigmas, the update rules and the number of evaluations equal diffusers'
FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler and
UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
solver_type="bh2", solver_order=2), the default config of Wan's pipelines.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SOLVERS = ("euler", "heun", "unipc")

# diffusers builds every schedule on the training grid t = 1..1000, sigma = t / 1000.
NUM_TRAIN_TIMESTEPS = 1000

Row = dict[str, jax.Array]          # one row of a schedule table: scalars
VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _check(solver: str, num_steps: int, shift: float) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r} "
                         f"(solvers: {', '.join(SOLVERS)})")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")


def _shifted(s, shift: float):
    """SD3 time shift, as flow.shift_timesteps, on numpy values."""
    return shift * s / (1 + (shift - 1) * s)


# ---------------------------------------------------------------------------------- sigmas

def sigmas(solver: str, num_steps: int, shift: float) -> np.ndarray:
    """The shifted sigma schedule, (num_steps + 1,) float32, decreasing, last = 0.

    euler / heun (FlowMatch*DiscreteScheduler.set_timesteps): num_steps points evenly
    spaced from 1 to sigma_min, then shifted, where sigma_min is the training grid's
    smallest sigma (1/1000) *already shifted once* in float32: diffusers shifts it in
    __init__ and again in set_timesteps, so the last nonzero sigma is shift applied twice.

    unipc (use_flow_sigmas): the first num_steps points of num_steps + 1 evenly spaced from
    1 to 1/1000, shifted once; the first is nudged to 1 - 1e-6 so that log(1 - sigma)
    stays finite. Its last nonzero sigma is much larger than Euler's (e.g. 10 steps,
    shift 1: 0.1009 against 0.001), so its final jump to 0 is a big one.
    """
    _check(solver, num_steps, shift)
    if solver in ("euler", "heun"):
        # __init__ works in float32 (torch); set_timesteps in float64 from the Python
        # floats of those float32 values, then casts to float32.
        smin = np.float32(1) / np.float32(NUM_TRAIN_TIMESTEPS)
        smin = np.float32(shift) * smin / (np.float32(1) + np.float32(shift - 1) * smin)
        smax = np.float32(1)
        t = np.linspace(float(smax) * NUM_TRAIN_TIMESTEPS, float(smin) * NUM_TRAIN_TIMESTEPS,
                        num_steps)
        s = _shifted(t / NUM_TRAIN_TIMESTEPS, shift)
    else:
        s = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, num_steps + 1)[:-1]
        s = _shifted(s, shift)
        if abs(s[0] - 1) < 1e-6:
            s[0] -= 1e-6
    return np.concatenate([s, [0.0]]).astype(np.float32)


def num_evaluations(solver: str, num_steps: int) -> int:
    """Model (velocity) evaluations a whole sampling run makes: Heun's last step is a
    plain Euler step (its corrector would need v at sigma = 0), so 2 n - 1."""
    _check(solver, num_steps, 1.0)
    return 2 * num_steps - 1 if solver == "heun" else num_steps


# ---------------------------------------------------------------------------------- tables

def _euler_table(s: np.ndarray) -> dict[str, np.ndarray]:
    n = len(s) - 1
    return {"sigma": s[:-1], "step": np.arange(n), "dt": s[1:] - s[:-1]}


def _heun_table(s: np.ndarray) -> dict[str, np.ndarray]:
    # Evaluation 2i predicts from sigma_i, 2i + 1 corrects at sigma_{i+1}; the last step
    # has only its predictor, which lands on sigma = 0.
    n = len(s) - 1
    step = np.repeat(np.arange(n), 2)[:-1]
    first = np.tile([True, False], n)[:-1]
    sigma = np.where(first, s[step], s[step + 1])
    return {"sigma": sigma, "step": step, "first": first, "dt": (s[1:] - s[:-1])[step]}


def _unipc_table(s32: np.ndarray) -> dict[str, np.ndarray]:
    """UniPC-bh2, order 2, data (x0) prediction, on the flow path alpha = 1 - sigma.

    At step i the model gives m_i = x_i - sigma_i v_i (x0 prediction at the predicted,
    uncorrected x_i). The corrector (UniC) first refines x_i from the previous corrected
    sample with m_{i-1}, m_{i-2} and the new m_i; the predictor (UniP) then goes to
    sigma_{i+1} from the corrected x_i with m_i, m_{i-1}:

        x_c = a_c last + b_c m_{i-1} + d_c (m_{i-2} - m_{i-1}) + e_c (m_i - m_{i-1})
        x'  = a_p x_c  + b_p m_i     + d_p (m_{i-1} - m_i)

    with lambda = log(alpha / sigma), h the step in lambda, phi = expm1(-h) = B(h):
    a = sigma_t / sigma_s, b = -alpha_t phi, and the D1 terms from rk = (lambda_prev -
    lambda_s) / h. Orders as diffusers: the predictor is first order at step 0 (warm-up)
    and at the last step (lower_order_final), second order between, with rho = 1/2; the
    corrector has the order of the previous predictor, rho = 1/2 for order 1 (fixed, not
    solved) and the 2x2 solve R rho = b for order 2.
    """
    s = s32.astype(np.float64)        # diffusers works from the float32 sigmas
    n = len(s) - 1
    alpha = 1.0 - s
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(s)   # lam[n] = +inf at sigma = 0
    t = {k: np.zeros(n) for k in ("a_c", "b_c", "d_c", "e_c", "a_p", "b_p", "d_p")}
    for i in range(n):
        # predictor i -> i + 1
        if s[i + 1] == 0:
            # h = inf: phi = -1, the update is x' = m_i (the x0 prediction); only reached
            # at the last step, which is first order, so no D1 term (it would be 0 * inf).
            t["b_p"][i] = 1.0
        else:
            h = lam[i + 1] - lam[i]
            phi = np.expm1(-h)
            t["a_p"][i] = s[i + 1] / s[i]
            t["b_p"][i] = -alpha[i + 1] * phi
            if 0 < i < n - 1:
                rk = (lam[i - 1] - lam[i]) / h
                t["d_p"][i] = -alpha[i + 1] * phi * 0.5 / rk
        # corrector of x_i (from step i - 1)
        if i > 0:
            h = lam[i] - lam[i - 1]
            hh = -h
            phi = np.expm1(hh)
            t["a_c"][i] = s[i] / s[i - 1]
            t["b_c"][i] = -alpha[i] * phi
            if i == 1:                       # previous predictor was first order
                rho0, rho1 = 0.0, 0.5
            else:
                rk = (lam[i - 2] - lam[i - 1]) / h
                b1 = (phi / hh - 1) / phi
                b2 = 2 * ((phi / hh - 1) / hh - 0.5) / phi
                # [[1, 1], [rk, 1]] rho = [b1, b2]
                rho0 = (b1 - b2) / (1 - rk)
                rho1 = b1 - rho0
                t["d_c"][i] = -alpha[i] * phi * rho0 / rk
            t["e_c"][i] = -alpha[i] * phi * rho1
    return {"sigma": s32[:-1], "step": np.arange(n), "correct": np.arange(n) > 0, **t}


def schedule(solver: str, num_steps: int, shift: float) -> dict[str, np.ndarray]:
    """Per-evaluation tables, each (num_evaluations(solver, num_steps),):

    'sigma' float32 where the model is evaluated, 'step' int32 the solver step that
    evaluation belongs to, and the solver's coefficients (float32, or bool flags).
    """
    s = sigmas(solver, num_steps, shift)
    table = {"euler": _euler_table, "heun": _heun_table, "unipc": _unipc_table}[solver](s)
    out = {}
    for k, a in table.items():
        a = np.asarray(a)
        out[k] = a if a.dtype == bool else a.astype(np.int32 if k == "step" else np.float32)
    return out


# ----------------------------------------------------------------------------------- steps

def init_carry(solver: str, x: jax.Array) -> Any:
    """The solver's history before the first evaluation (zeros shaped like x):
    euler (), heun (x at the step start, its velocity), unipc (last corrected sample,
    m_{i-1}, m_{i-2})."""
    _check(solver, 1, 1.0)
    z = jnp.zeros(x.shape, jnp.float32)
    return {"euler": (), "heun": (z, z), "unipc": (z, z, z)}[solver]


def euler_step(x: jax.Array, v: jax.Array, carry: tuple, row: Row) -> tuple[jax.Array, tuple]:
    """x + (sigma_next - sigma) v."""
    return x + row["dt"] * v, carry


def heun_step(x: jax.Array, v: jax.Array, carry: tuple, row: Row) -> tuple[jax.Array, tuple]:
    """One Heun evaluation. row['first']: v is at the step start; go to the Euler point
    and remember (x, v). Otherwise v is at the Euler point: restart from the remembered x
    with the mean of both velocities (trapezoid)."""
    x_start, v_start = carry
    first, dt = row["first"], row["dt"]
    predicted = x + dt * v
    corrected = x_start + (0.5 * (v_start + v)) * dt
    x_next = jnp.where(first, predicted, corrected)
    return x_next, (jnp.where(first, x, x_start), jnp.where(first, v, v_start))


def unipc_step(x: jax.Array, v: jax.Array, carry: tuple, row: Row) -> tuple[jax.Array, tuple]:
    """One UniPC step (see _unipc_table): correct x with the new x0 prediction, then
    predict the next sample. x is the predictor's output the model was evaluated at."""
    last, m1, m2 = carry
    m = x - row["sigma"] * v
    corrected = row["a_c"] * last + row["b_c"] * m1 + row["d_c"] * (m2 - m1) + row["e_c"] * (m - m1)
    x = jnp.where(row["correct"], corrected, x)      # no history before step 1
    x_next = row["a_p"] * x + row["b_p"] * m + row["d_p"] * (m1 - m)
    return x_next, (x, m, m1)


STEPS = {"euler": euler_step, "heun": heun_step, "unipc": unipc_step}


# --------------------------------------------------------------------------------- denoise

def denoise(velocity_fn: VelocityFn, x: jax.Array, *, solver: str, num_steps: int,
            shift: float, operand: Any = None) -> jax.Array:
    """Integrate from pure noise x (any shape, e.g. (B, F, h, w, c)) to the x0 estimate.

    velocity_fn(x, sigma, step) -> v shaped like x: sigma a float32 scalar in [0, 1], step
    the int32 solver step (both evaluations of a Heun step get the same step, so guidance
    schedules follow solver steps). It is traced once, inside one `lax.fori_loop` of
    num_evaluations(solver, num_steps) iterations; solver, num_steps and shift are static.
    With `operand` (a pytree, e.g. model parameters) the call is
    velocity_fn(x, sigma, step, operand) and the operand rides in the loop carry, so the
    loop body sees it at its own trace level (NNX modules merged from it work there).
    Returns float32.
    """
    table = schedule(solver, num_steps, shift)
    rows = {k: jnp.asarray(a) for k, a in table.items()}
    step_fn = STEPS[solver]
    x = jnp.asarray(x, jnp.float32)

    def body(k, state):
        x, carry, op = state
        row = {name: a[k] for name, a in rows.items()}
        v = (velocity_fn(x, row["sigma"], row["step"]) if operand is None
             else velocity_fn(x, row["sigma"], row["step"], op))
        if v.shape != x.shape:
            raise ValueError(f"velocity_fn returned {v.shape}, expected the sample's {x.shape}")
        x, carry = step_fn(x, v.astype(jnp.float32), carry, row)
        return x, carry, op

    x, _, _ = jax.lax.fori_loop(0, len(table["sigma"]), body, (x, init_carry(solver, x), operand))
    return x
