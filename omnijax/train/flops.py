"""Training FLOPs per example, the numerator of the trainer's MFU estimate.

Two ways to count, one per kind of model:
    transformer_flops   the analytic rule for a transformer (6 x params x tokens for the
                        matmuls, forward + backward, plus the attention scores)
    xla_flops           XLA's own count of a jitted forward, x 3 for forward + backward
                        (convolutional models, where no closed form is worth keeping)
Both work on abstract shapes (`jax.eval_shape` / lowering), so counting a large preset
allocates nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx


def abstract_param_count(model_fn: Callable[[nnx.Rngs], nnx.Module]) -> int:
    """Parameters of `model_fn(rngs)` (every `nnx.Param`, LoRA adapters included)."""
    from omnijax.train.state import build_abstract, count_params

    _, params, _ = build_abstract(model_fn, nnx.Param)
    return count_params(params)


def transformer_flops(params: int, tokens: int, depth: int, width: int) -> float:
    """6 x params x tokens + 12 x depth x tokens^2 x width: the training cost of one example
    (matmuls forward + backward, and the attention scores / weighted sum over the full
    joint sequence)."""
    return 6.0 * params * tokens + 12.0 * depth * tokens * tokens * width


def xla_flops(model_fn: Callable[[nnx.Rngs], nnx.Module], forward: Callable[[nnx.Module, Any], Any],
              example: jax.ShapeDtypeStruct) -> float:
    """3 x XLA's FLOP count of `forward(model, example)` (forward + backward ~ 3 forwards)."""
    from omnijax.train.state import build_abstract

    graphdef, state, _ = build_abstract(model_fn, ...)

    def fwd(s, x):
        return forward(nnx.merge(graphdef, s), x)

    cost = jax.jit(fwd).lower(state, example).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return 3.0 * float((cost or {}).get("flops", 0.0))
