"""One segment of video latents: the whole denoise loop as one jitted function.

    segment(params, inputs) -> latents (B, F, h, w, c)

`inputs` always holds every condition with a fixed shape (zeros where a condition is
absent) plus per-sample `has_*` flags, and the clean motion prefix as a per-frame mask:
the first segment of a video (no prefix), later segments (2 clean frames), text-only and
audio-driven samples all run the same compiled program. Only what changes the traced
graph is static (`SegmentSpec`): the solver, the step count, the flow shift, the guidance
scales and which conditions take part in guidance.

Guidance (README "Sampling"): the velocities of nested condition sets, none -> +text ->
+text+audio, combined as v_0 + sum_i s_i (v_i - v_{i-1}) with each scale annealed over the
steps (`flow.guidance_scale`). Written out, branch i enters with coefficient
c_0 = 1 - s_1, c_i = s_i - s_{i+1}, c_last = s_last, so a branch whose coefficient is 0 at
every step (s_text = 1 drops the unconditional branch; s_text = s_audio drops the text-only
one) is not computed at all. The remaining branches run as ONE batched forward of
B x branches samples, told apart only by their `keep` masks; pose and the reference are
kept in every branch.

Clean frames are pinned: they enter every forward at their context value and get zero
velocity, which leaves them unchanged under every solver (Euler, Heun, and UniPC, whose
data prediction of a zero-velocity sample is the sample itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from omnijax.diffusion import flow, sampler
from omnijax.models import partitioning

GUIDED = ("text", "audio")          # the guidance chain, weakest condition first
SCHEDULES = ("constant", "linear", "cosine")

# every key of a segment's inputs -> its rank (the batch axis is always first)
INPUT_RANKS = {"noise": 5, "context": 5, "clean": 2, "ref": 5, "audio": 3, "pose": 5,
               "text": 3, "text_mask": 2, "has_ref": 1, "has_audio": 1, "has_pose": 1,
               "has_text": 1}


@dataclasses.dataclass(frozen=True)
class SegmentSpec:
    """What the compiled segment program depends on (everything else is data)."""

    solver: str = "unipc"
    steps: int = 25
    shift: float = 1.0
    cfg_text: tuple[float, float] = (1.0, 1.0)     # (first step, last step)
    cfg_audio: tuple[float, float] = (1.0, 1.0)
    schedule: str = "linear"
    use_text: bool = True                           # text / audio take part in guidance
    use_audio: bool = True

    def __post_init__(self):
        sampler.sigmas(self.solver, self.steps, self.shift)   # validates solver / steps / shift
        if self.schedule not in SCHEDULES:
            raise ValueError(f"guidance schedule {self.schedule!r} not in {SCHEDULES}")
        for name in ("cfg_text", "cfg_audio"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2:
                raise ValueError(f"{name} must be (start, end), got {value}")
            object.__setattr__(self, name, value)

    def chain(self) -> tuple[str, ...]:
        """The guided conditions present, in chain order."""
        return tuple(c for c in GUIDED if getattr(self, f"use_{c}"))

    def scales(self) -> list[tuple[float, float]]:
        return [getattr(self, f"cfg_{c}") for c in self.chain()]


def branch_coefficients(spec: SegmentSpec) -> list[tuple[tuple[str, ...], tuple[float, float]]]:
    """The branches that are computed: (conditions kept, (coefficient at the first step,
    at the last step)). Coefficients are affine in the annealing weight, so a branch that is
    0 at both ends is 0 at every step and is dropped."""
    chain, scales = spec.chain(), spec.scales()
    out = []
    for i in range(len(chain) + 1):
        ends = []
        for end in (0, 1):
            s = [sc[end] for sc in scales]
            below = 1.0 if i == 0 else s[i - 1]      # coefficient = s_i - s_{i+1}, s_0 = 1
            above = s[i] if i < len(s) else 0.0
            ends.append((1.0 - above) if i == 0 else (below - above))
        if i == 0 and not chain:
            ends = [1.0, 1.0]
        if ends != [0.0, 0.0]:
            out.append((chain[:i], (ends[0], ends[1])))
    return out


def _coefficients(spec: SegmentSpec, step: jax.Array) -> jax.Array:
    """(branches,) float32 coefficients at solver step `step` (traced)."""
    chain = spec.chain()
    s = [flow.guidance_scale(a, b, step, spec.steps, spec.schedule) for a, b in spec.scales()]
    full = []
    for i in range(len(chain) + 1):
        above = s[i] if i < len(s) else jnp.float32(0.0)
        full.append((1.0 - above) if i == 0 else (s[i - 1] - above))
    if not chain:
        full = [jnp.float32(1.0)]
    kept = {conds for conds, _ in branch_coefficients(spec)}
    return jnp.stack([c for i, c in enumerate(full) if chain[:i] in kept]).astype(jnp.float32)


def _tile(x: jax.Array, n: int) -> jax.Array:
    return jnp.concatenate([x] * n, axis=0) if n > 1 else x


def velocity(model: nnx.Module, spec: SegmentSpec, inputs: Mapping[str, jax.Array],
             x: jax.Array, sigma: jax.Array, step: jax.Array) -> jax.Array:
    """Guided velocity (B, F, h, w, c) at the current sample `x`, one batched forward.

    Under a loop transform, build `model` inside the loop body (NNX modules cannot cross
    trace levels): `denoise_segment` does."""
    branches = branch_coefficients(spec)
    nb, b = len(branches), x.shape[0]
    clean = inputs["clean"]
    pinned = clean[:, :, None, None, None]
    x_in = jnp.where(pinned, inputs["context"], x)
    keep = {"ref": _tile(inputs["has_ref"], nb), "pose": _tile(inputs["has_pose"], nb)}
    for cond in GUIDED:
        keep[cond] = jnp.concatenate([inputs[f"has_{cond}"] & (cond in conds) for conds, _ in branches])
    dt = jnp.dtype(model.config.dtype)
    v = model(_tile(x_in, nb).astype(dt), jnp.full((b * nb,), sigma, jnp.float32),
              clean=_tile(clean, nb), ref=_tile(inputs["ref"], nb).astype(dt),
              audio=_tile(inputs["audio"], nb).astype(dt), pose=_tile(inputs["pose"], nb).astype(dt),
              text=_tile(inputs["text"], nb).astype(dt), text_mask=_tile(inputs["text_mask"], nb),
              keep=keep)
    v = v.astype(jnp.float32).reshape(nb, b, *x.shape[1:])
    v = jnp.tensordot(_coefficients(spec, step), v, axes=1)
    return jnp.where(pinned, 0.0, v)


def denoise_segment(graphdef: nnx.GraphDef, params: Any, spec: SegmentSpec,
                    inputs: Mapping[str, jax.Array]) -> jax.Array:
    """The whole solver loop for one segment (traceable): noise -> latents, clean frames kept.
    The model is merged from (graphdef, params) inside the loop body, params (and the
    inputs) riding in the loop carry."""
    pinned = inputs["clean"][:, :, None, None, None]
    x = jnp.where(pinned, inputs["context"], inputs["noise"]).astype(jnp.float32)

    def velocity_fn(x, sigma, step, operand):
        params, inputs = operand
        return velocity(nnx.merge(graphdef, params), spec, inputs, x, sigma, step)

    out = sampler.denoise(velocity_fn, x, solver=spec.solver, num_steps=spec.steps, shift=spec.shift,
                          operand=(params, dict(inputs)))
    return jnp.where(pinned, inputs["context"], out)


def input_spec(model_config, batch: int, frames: int, height: int, width: int, text_len: int
               ) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a segment's inputs (latent grid height x width)."""
    S, f32, b = jax.ShapeDtypeStruct, jnp.float32, jnp.bool_
    c, T = model_config.latent_channels, 1 + 4 * (frames - 1)
    hp, wp = round(8 * height * model_config.pose_scale), round(8 * width * model_config.pose_scale)
    return {"noise": S((batch, frames, height, width, c), f32),
            "context": S((batch, frames, height, width, c), f32),
            "clean": S((batch, frames), b), "ref": S((batch, 1, height, width, c), f32),
            "audio": S((batch, T, model_config.audio_dim), f32),
            "pose": S((batch, T, hp, wp, model_config.pose_channels), f32),
            "text": S((batch, text_len, model_config.text_dim), f32),
            "text_mask": S((batch, text_len), b),
            **{f"has_{c_}": S((batch,), b) for c_ in ("ref", "audio", "pose", "text")}}


def check_inputs(inputs: Mapping[str, Any], spec: Mapping[str, jax.ShapeDtypeStruct]) -> None:
    missing = set(spec) - set(inputs)
    if missing:
        raise ValueError(f"segment inputs lack {sorted(missing)}")
    for k, s in spec.items():
        if tuple(np.shape(inputs[k])) != tuple(s.shape):
            raise ValueError(f"segment input {k!r} must have shape {tuple(s.shape)}, got {np.shape(inputs[k])}")


class SegmentFunction:
    """`fn(inputs) -> latents`: the jitted segment program for one model and one spec.

    With a `mesh`, the batch is split over its data/fsdp axes and the parameters are laid
    out by their logical axis names (the train step's rules), the mesh and rules scoped to
    each call. Compiles once per input shape; `compiles` counts them.
    """

    def __init__(self, model: nnx.Module, spec: SegmentSpec, *, mesh: Mesh | None = None,
                 rules: Mapping[str, Any] | None = None):
        self.spec = spec
        self.graphdef, self.params = nnx.split(model)
        self.mesh = mesh
        self.rules = dict(partitioning.DEFAULT_RULES if rules is None else rules)

        def run(params, inputs):
            return denoise_segment(self.graphdef, params, spec, inputs)

        if mesh is None:
            self._jitted = jax.jit(run)
        else:
            param_sh = partitioning.logical_to_sharding(self.params, mesh, self.rules)
            batch_sh = {k: partitioning.batch_sharding(mesh, r, self.rules) for k, r in INPUT_RANKS.items()}
            self.params = jax.device_put(self.params, param_sh)
            self._jitted = jax.jit(run, in_shardings=(param_sh, batch_sh),
                                   out_shardings=batch_sh["noise"])

    @property
    def compiles(self) -> int:
        return self._jitted._cache_size()

    def __call__(self, inputs: Mapping[str, Any]) -> jax.Array:
        inputs = {k: inputs[k] for k in INPUT_RANKS}
        if self.mesh is None:
            return self._jitted(self.params, inputs)
        with jax.set_mesh(self.mesh), partitioning.axis_rules(self.rules):
            return self._jitted(self.params, inputs)
