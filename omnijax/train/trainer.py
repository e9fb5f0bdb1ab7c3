"""The training loop: one jitted, sharded, donated step and the side effects around it.

    mesh -> objective (model + loss + data) -> optimizer -> state (fresh | resumed | init_from)
    -> step lowered and compiled (memory_analysis logged) -> loop:
         next batch -> global array -> step -> guard -> metrics -> checkpoint / preemption

The step (`make_train_step`) is a pure function of (state, batch): it merges the NNX model
from the static graphdef and the state's params, computes the loss in the compute dtype
(bf16 by default) against float32 master weights, accumulates gradients over microbatches
with `lax.scan`, and applies AdamW + EMA only when loss and gradient norm are finite.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from omnijax.data import pipeline
from omnijax.models import partitioning
from omnijax.train import checkpoint as ckpt_lib
from omnijax.train import mesh as mesh_lib
from omnijax.train import state as state_lib
from omnijax.train.state import TrainState

log = logging.getLogger(__name__)

# Exit statuses of `train` (also the process exit code of `python -m omnijax.train`).
OK, PREEMPTED, NONFINITE = 0, 3, 4


# ============================================================================ the step

def _cast_floats(tree, dtype):
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def _split_microbatches(batch: dict, n: int, mesh: Mesh | None) -> dict:
    """(B, ...) -> (n, B/n, ...), keeping each microbatch split like the batch it came from
    (`partitioning.batch_sharding` under the rules in scope while the step is traced).

    Sample i goes to microbatch i % n, so every device keeps its own rows (no reshuffle).
    """
    def one(x):
        b = x.shape[0]
        y = x.reshape(b // n, n, *x.shape[1:]).swapaxes(0, 1)
        if mesh is not None:
            spec = P(None, *partitioning.batch_sharding(mesh, x.ndim).spec)
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
        return y
    return jax.tree.map(one, batch)


def ema_decay_at(step: jax.Array, decay: float, warmup: bool = True) -> jax.Array:
    """EMA decay for the update after `step` earlier ones: `min(decay, (1 + n) / (10 + n))`
    with warmup, so a short run's EMA follows its params instead of staying mostly the
    random init (at 0.999 and no warmup, 200 steps leave 82% of the EMA at the init)."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    n = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def make_train_step(graphdef: nnx.GraphDef, loss_fn: Callable, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, ema_decay: float, ema_warmup: bool = True,
                    compute_dtype=jnp.bfloat16, microbatches: int = 1, mesh: Mesh | None = None):
    """The pure step `(state, batch) -> (state, metrics)`.

    `loss_fn(model, batch, rng) -> (loss, aux)`: `aux` is a dict of arrays that are summed
    over microbatches (per-condition-mix sums and counts) plus scalars that are averaged.
    """
    def compute_loss(params, frozen, batch, rng):
        model = nnx.merge(graphdef, _cast_floats(params, compute_dtype),
                          _cast_floats(frozen, compute_dtype))
        loss, aux = loss_fn(model, batch, rng)
        return loss.astype(jnp.float32), aux

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if microbatches == 1:
            (loss, aux), grads = grad_fn(state.params, state.frozen, batch, rng)
        else:
            micro = _split_microbatches(batch, microbatches, mesh)
            zeros = jax.tree.map(jnp.zeros_like, state.params)

            def body(carry, xs):
                i, mb = xs
                (l, a), g = grad_fn(state.params, state.frozen, mb, jax.random.fold_in(rng, i))
                gsum, lsum = carry
                return (jax.tree.map(jnp.add, gsum, g), lsum + l), a

            (gsum, lsum), auxs = jax.lax.scan(
                body, (zeros, jnp.zeros((), jnp.float32)),
                (jnp.arange(microbatches), micro))
            grads = jax.tree.map(lambda g: g / microbatches, gsum)
            loss = lsum / microbatches
            aux = {k: (v.sum(0) if k.endswith(("_sum", "_count")) else v.mean(0))
                   for k, v in auxs.items()}

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(_):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            # counted in successful updates would be nicer, but step (attempts) is what the
            # state has; a skipped step only nudges the warmup
            d = ema_decay_at(state.step, ema_decay, ema_warmup)
            ema = jax.tree.map(lambda e, p: e * d + p * (1.0 - d), state.ema, params)
            return params, opt_state, ema

        def skip(_):
            return state.params, state.opt_state, state.ema

        # The guard: a non-finite loss or gradient leaves params, moments and EMA untouched.
        params, opt_state, ema = jax.lax.cond(finite, apply, skip, None)
        bad = jnp.where(finite, 0, state.bad_steps + 1).astype(jnp.int32)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
                            bad_steps=bad, skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step),
                   "ema_decay": ema_decay_at(state.step, ema_decay, ema_warmup),
                   "finite": finite, "bad_steps": bad, "skipped": new.skipped, **aux}
        return new, metrics

    return step


class ScopedStep:
    """The jitted step, traced, lowered and run with its mesh and axis rules in scope.

    The model's activation constraints resolve against the ambient mesh at trace time, and
    `jax.set_mesh` cannot be entered under jit, so the scope wraps each call instead of
    being installed globally for the rest of the process.
    """

    def __init__(self, jitted, mesh: Mesh, rules: Mapping[str, Any]):
        self.jitted, self.mesh, self.rules = jitted, mesh, rules

    def __call__(self, state, batch):
        with mesh_lib.activate(self.mesh, self.rules):
            return self.jitted(state, batch)

    def lower(self, state, batch):
        with mesh_lib.activate(self.mesh, self.rules):
            return self.jitted.lower(state, batch)


def jit_train_step(step_fn, state_shardings: TrainState, batch_shardings: dict, mesh: Mesh,
                   rules: Mapping[str, Any]) -> ScopedStep:
    """`jax.jit` with explicit in/out shardings; the state is donated (updated in place)."""
    rep = NamedSharding(mesh, P())
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings),
                     out_shardings=(state_shardings, rep), donate_argnums=(0,))
    return ScopedStep(jitted, mesh, rules)


def compile_step(jitted, abstract_state: TrainState, abstract_batch: dict):
    """Lower + compile before the loop; log XLA's memory and FLOP estimates."""
    t0 = time.perf_counter()
    lowered = jitted.lower(abstract_state, abstract_batch)
    compiled = lowered.compile()
    info: dict[str, Any] = {"compile_s": time.perf_counter() - t0}
    try:
        mem = compiled.memory_analysis()
        if mem is not None:
            for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                      "generated_code_size_in_bytes", "alias_size_in_bytes"):
                info[k] = int(getattr(mem, k, 0))
    except Exception as e:  # some backends do not implement it
        info["memory_analysis"] = f"unavailable: {e}"
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        info["xla_flops"] = float(cost.get("flops", 0.0)) if cost else 0.0
    except Exception:
        info["xla_flops"] = 0.0
    log.info("compiled train step: %s", json.dumps(info))
    return compiled, info


# ============================================================================ preemption

class StopSignal:
    """Turns SIGTERM/SIGINT, and an optional wall-clock deadline (`train.max_minutes`), into a
    flag the loop polls (save, then exit cleanly)."""

    def __init__(self, deadline: float | None = None):
        self.received: int | None = None
        self.deadline = deadline          # time.monotonic() value, or None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def pending(self) -> bool:
        """This process got a signal or is past its deadline (no collective)."""
        return self.received is not None or (self.deadline is not None and time.monotonic() > self.deadline)

    def should_stop(self) -> bool:
        """Every process stops at the same step if any one of them got a signal or ran out
        of time (clocks differ between hosts, so the decision is gathered)."""
        flag = self.pending()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            flag = bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
        return flag


# ============================================================================ observability

# bf16 dense peaks (FLOP/s per device) for the MFU estimate; CPUs are measured instead.
_PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "v4": 275e12, "v5e": 197e12,
               "v5 lite": 197e12, "v5p": 459e12, "v6e": 918e12, "v6 lite": 918e12}


def measured_matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a float32 n x n matmul on device 0 (the CPU roofline stand-in)."""
    x = jax.device_put(jnp.ones((n, n), jnp.float32), jax.local_devices()[0])
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times))


def peak_flops_per_device(override: float = 0.0) -> tuple[float, str]:
    if override > 0:
        return float(override), "config"
    kind = jax.devices()[0].device_kind.lower()
    for key, peak in _PEAK_FLOPS.items():
        if key in kind:
            return peak, f"{kind} bf16 spec"
    return measured_matmul_peak(), f"{kind} measured f32 matmul"


class MetricWriter:
    """TensorBoard scalars + a JSON-lines log; only process 0 writes anything."""

    def __init__(self, workdir: epath.Path, enabled: bool):
        self.enabled = enabled and jax.process_index() == 0
        self._tb = None
        self._jsonl = None
        if self.enabled:
            workdir.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(workdir / "tensorboard"))
            self._jsonl = (workdir / "metrics.jsonl").open("a")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def host_scalars(metrics: dict, breakdowns: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    """Device metrics -> flat float dict. Each breakdown `key -> names` turns the aux pair
    `<key>_loss_sum` / `<key>_count` (per-group sums) into `loss_<key>/<name>` means and
    `count_<key>/<name>` counts (e.g. the loss of every condition mix)."""
    m = jax.device_get(metrics)
    grouped = {f"{k}_loss_sum" for k in breakdowns} | {f"{k}_count" for k in breakdowns}
    out = {k: float(np.asarray(v)) for k, v in m.items() if k not in grouped and np.ndim(v) == 0}
    for key, names in breakdowns.items():
        if f"{key}_loss_sum" not in m:
            continue
        sums, counts = np.asarray(m[f"{key}_loss_sum"]), np.asarray(m[f"{key}_count"])
        for name, total, count in zip(names, sums, counts):
            if count > 0:
                out[f"loss_{key}/{name}"] = float(total / count)
                out[f"count_{key}/{name}"] = float(count)
    return out


# ============================================================================ the loop

@dataclasses.dataclass
class Setup:
    """Everything the loop needs that does not depend on where the state comes from."""
    mesh: Mesh
    rules: dict                   # logical axis -> mesh axes (config over the defaults)
    objective: Any
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract: TrainState          # ShapeDtypeStructs
    shardings: TrainState         # NamedShardings
    batch_spec: dict              # global batch ShapeDtypeStructs
    batch_shardings: dict         # key -> partitioning.batch_sharding (the step's in_shardings)
    step: Callable                # jitted (state, batch) -> (state, metrics), state donated
    flops_per_example: float

    @property
    def target(self) -> TrainState:
        """Abstract state with shardings: a restore target / lowering argument."""
        return state_lib.with_shardings(self.abstract, self.shardings)

    def init_state(self, seed: int) -> TrainState:
        return state_lib.create_state(self.objective.model_fn, self.objective.trainable,
                                      self.tx, self.shardings, seed)

    def global_batch(self, local: dict) -> dict:
        """This process's rows -> global arrays laid out as the step's in_shardings."""
        return pipeline.to_global(local, self.mesh, self.rules)


def setup(cfg, objective=None, devices=None) -> Setup:
    """Mesh, objective, optimizer, abstract state + shardings, the jitted step."""
    from omnijax.train import objectives  # model imports only when training
    mesh = partitioning.make_mesh(dict(cfg.mesh.shape), devices or mesh_lib.config_devices(cfg.mesh))
    rules = mesh_lib.rules_from_config(cfg.mesh.get("rules"))
    objective = objective or objectives.build(cfg)
    tx, schedule = state_lib.make_optimizer(cfg.optim)
    # Abstract shapes are taken with no mesh in scope: with one, NNX would read logical
    # names as mesh axes.
    graphdef, _, _ = state_lib.build_abstract(objective.model_fn, objective.trainable)
    abstract = state_lib.abstract_state(objective.model_fn, objective.trainable, tx, cfg.train.seed)
    flops = objective.flops_per_example()
    shardings = state_lib.state_shardings(abstract, mesh, rules)
    B = int(cfg.train.batch_size)
    dp = mesh_lib.data_parallel_size(mesh, rules)
    if B % (dp * int(cfg.train.microbatches)):
        raise ValueError(f"train.batch_size={B} must be divisible by the batch axes' size "
                         f"({dp}) x microbatches ({cfg.train.microbatches})")
    spec = objective.batch_spec(B)
    b_shard = {k: partitioning.batch_sharding(mesh, len(v.shape), rules) for k, v in spec.items()}
    step_fn = make_train_step(
        graphdef, objective.loss, tx, schedule, ema_decay=float(cfg.optim.ema_decay),
        ema_warmup=bool(cfg.optim.get("ema_warmup", True)),
        compute_dtype=jnp.dtype(cfg.train.compute_dtype), microbatches=int(cfg.train.microbatches),
        mesh=mesh)
    return Setup(mesh=mesh, rules=rules, objective=objective, graphdef=graphdef, tx=tx, schedule=schedule,
                 abstract=abstract, shardings=shardings, batch_spec=spec, batch_shardings=b_shard,
                 step=jit_train_step(step_fn, shardings, b_shard, mesh, rules), flops_per_example=flops)


def init_lora_backbone(cfg, su: Setup, state: TrainState) -> TrainState:
    """LoRA fine-tuning from a full-training run: its EMA (or params, with
    `lora.init_from_params=True`) becomes the frozen backbone; adapters start fresh.

    The LoRA model's frozen kernels live at `.../<layer>/base/<name>`; the source run saved
    them at `.../<layer>/<name>`, so paths are matched with the `base` hop removed."""
    src = "params" if cfg.lora.get("init_from_params", False) else "ema"
    _, base_abs, _ = state_lib.build_abstract(su.objective.base_model_fn, nnx.Param)
    rules = mesh_lib.rules_from_config(cfg.mesh.get("rules"))
    base_target = state_lib.with_shardings(base_abs, mesh_lib.state_shardings(base_abs, su.mesh, rules))
    loaded = ckpt_lib.restore_subset(cfg.init_from, {src: base_target})[src]
    by_path = {tuple(p): v for p, v in loaded.flat_state()}
    flat = []
    filled = 0
    for path, var in state.frozen.flat_state():
        key = tuple(p for p in path if p != "base")
        if key in by_path and isinstance(var, nnx.Param):
            var = var.replace(by_path[key].get_raw_value())
            filled += 1
        flat.append((path, var))
    if filled != len(by_path):
        raise ValueError(f"init_from {cfg.init_from}: matched {filled} of {len(by_path)} backbone "
                         "parameters; is it a run of the same model (size and overrides)?")
    log.info("LoRA backbone <- %s (%s), %d tensors", cfg.init_from, src, filled)
    return state.replace(frozen=nnx.State.from_flat_path(flat))


def train(cfg, workdir: str, objective=None) -> int:
    """Run (or resume) the job described by `cfg` in `workdir`; returns an exit status.

    OK: reached `cfg.train.steps` (final checkpoint written). PREEMPTED: SIGTERM/SIGINT,
    checkpoint written, rerun the same command to resume. NONFINITE: `max_bad_steps`
    non-finite steps in a row; nothing was saved during the streak, so the latest
    checkpoint is the last good one.
    """
    workdir = ckpt_lib.as_path(workdir)
    config_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    peak, peak_src = peak_flops_per_device(float(cfg.observe.get("peak_flops", 0.0)))

    # ---------------------------------------------------------------- mesh, model, optimizer, step
    su = setup(cfg, objective)
    mesh, objective = su.mesh, su.objective
    log.info("mesh: %s", mesh_lib.describe(mesh))
    log.info("params: %s trainable, %s frozen", f"{state_lib.count_params(su.abstract.params):,}",
             f"{state_lib.count_params(su.abstract.frozen):,}")
    B = int(cfg.train.batch_size)
    data = objective.make_data(cfg, mesh)
    # what sampling must repeat (flow shift, latent shape, motion frames): saved with every
    # checkpoint's config, read by export
    config_dict["recipe"] = objective.recipe() if hasattr(objective, "recipe") else {}

    # ---------------------------------------------------------------- state: resume | init_from | fresh
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=cfg.checkpoint.keep,
                                 save_every=cfg.checkpoint.every,
                                 async_save=cfg.checkpoint.get("async_save", True))
    target = su.target
    latest = ckpt.latest_step()
    if latest is not None:
        state = TrainState.from_dict(ckpt.restore(latest, target.as_dict(), data))
        log.info("resumed from %s step %d", ckpt.directory, latest)
    else:
        state = su.init_state(int(cfg.train.seed))
        if cfg.get("init_from") and cfg.get("lora") and cfg.lora.get("rank", 0):
            state = init_lora_backbone(cfg, su, state)
        elif cfg.get("init_from"):
            sub = ckpt_lib.restore_subset(cfg.init_from, {"params": target.params, "ema": target.ema})
            state = state.replace(params=sub["params"], ema=sub["ema"])
    ckpt_lib.write_json(workdir / "config.json", config_dict)

    # ---------------------------------------------------------------- compile
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=su.batch_shardings[k])
                      for k, v in su.batch_spec.items()}
    compiled, info = compile_step(su.step, target, abstract_batch)
    flops_per_step = su.flops_per_example * B
    log.info("MFU basis: %.3g FLOP/step (analytic), peak %.3g FLOP/s/device (%s)",
             flops_per_step, peak, peak_src)

    # ---------------------------------------------------------------- loop
    logdir = cfg.observe.get("logdir", "")
    if not logdir and "://" in str(workdir):
        # object stores have no append: TensorBoard events and metrics.jsonl stay local
        logdir = os.path.join("logs", workdir.name)
        log.warning("workdir %s is remote: logs go to %s (set --config.observe.logdir)", workdir, logdir)
    writer = MetricWriter(ckpt_lib.as_path(logdir) if logdir else workdir, enabled=True)
    start = int(jax.device_get(state.step))
    total = int(cfg.train.steps)
    log_every = max(1, int(cfg.train.log_every))
    max_bad = int(cfg.train.max_bad_steps)
    status = OK
    from tqdm import tqdm
    budget = float(cfg.train.get("max_minutes", 0.0) or 0.0)
    # a timed run ends at its budget, not at train.steps: show the time left, not an ETA
    timed = dict(bar_format="{desc}: {n_fmt} steps [{elapsed}, {rate_fmt}{postfix}]") if budget > 0 else {}
    bar = tqdm(total=total, initial=start, disable=jax.process_index() != 0,
               desc=f"train {objective.name}" + (f" ({budget:.3g} min budget)" if budget > 0 else ""),
               dynamic_ncols=True, **timed)
    t_last, n_last = time.perf_counter(), start

    def record(step_no: int, metrics: dict, force: bool = False) -> int:
        """Host side of a finished step: log it when due (or when it was bad, or the run
        ends here); -> bad_steps."""
        nonlocal t_last, n_last
        bad = int(jax.device_get(metrics["bad_steps"]))
        if force or step_no % log_every == 0 or step_no == total or bad:
            scalars = host_scalars(metrics, getattr(objective, "breakdowns", {}))
            now = time.perf_counter()
            dt = (now - t_last) / max(step_no - n_last, 1)
            t_last, n_last = now, step_no
            scalars.update({"steps_per_s": 1.0 / dt,
                            "tokens_per_s": objective.tokens_per_example() * B / dt,
                            "mfu": flops_per_step / dt / (peak * jax.device_count())})
            writer.write(step_no, scalars)
            left = {"left": f"{max(0.0, deadline - time.monotonic()) / 60:.1f} min"} if deadline else {}
            bar.set_postfix(loss=f"{scalars['loss']:.4g}", skipped=int(scalars["skipped"]), **left)
        return bad

    # The host never waits for the step it just dispatched: it reads the previous step's
    # guard counter (done, or nearly) while the device runs this one, and fetches the next
    # batch meanwhile. It waits for the current step only where a decision needs it: a
    # checkpoint (never written inside a non-finite streak), the last step, and the
    # stop-signal poll (a collective in multi-process runs, so every `log_every` steps).
    pending = None                 # (step, metrics) dispatched, not yet read on the host
    deadline = time.monotonic() + 60.0 * budget if budget > 0 else None
    with StopSignal(deadline) as stop:
        step = start
        while step < total:
            batch = su.global_batch(next(data))
            state, metrics = compiled(state, batch)
            step += 1
            bar.update(1)
            bad = record(*pending) if pending else 0
            pending = (step, metrics)
            if bad >= max_bad:
                status = NONFINITE
                break
            poll = step % log_every == 0 or jax.process_count() == 1
            save = ckpt.due(step) or step == total
            if not (save or (poll and stop.pending()) or step % log_every == 0):
                continue
            stopping = poll and stop.should_stop()
            bad = record(*pending, force=stopping)   # this step, synchronously
            pending = None
            if bad >= max_bad:
                status = NONFINITE
                break
            if stopping:
                if stop.received is None:     # the time budget: a normal end of a timed run
                    log.warning("time budget of %.3g min reached at step %d: checkpointing and "
                                "finishing", budget, step)
                    if bad == 0:
                        ckpt.save(step, state.as_dict(), data, config_dict)
                    break
                log.warning("signal %s: checkpointing step %d and exiting", stop.received, step)
                ckpt.save(step, state.as_dict(), data, config_dict)
                status = PREEMPTED
                break
            if bad == 0 and save:
                ckpt.save(step, state.as_dict(), data, config_dict)
        if pending and status == OK:
            record(*pending)
    if status == NONFINITE:
        log.error("%d non-finite steps in a row (limit %d): stopping; the latest checkpoint "
                  "(step %s) holds the last good state", max_bad, max_bad, ckpt.latest_step())
    bar.close()
    ckpt.close()
    writer.close()
    log.info("finished at step %d with status %d (%d non-finite steps skipped)", step, status,
             int(jax.device_get(state.skipped)))
    return status
