"""Reading Hugging Face-format checkpoint directories (config.json + safetensors) into NNX modules.

Shared by the wav2vec2 and T5 ports. Only safetensors are read: a directory holding just
`pytorch_model.bin` (a pickle, which can run code when loaded) is refused with the command
that converts it. Weights go into an abstract module (`nnx.eval_shape`), so a multi-billion
parameter encoder is never first initialised at random.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")

# name in HF configs -> jax function; "gelu" is the exact (erf) GELU, "gelu_new" the tanh one.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str, *, where: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def read_json(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


def is_omnijax_dir(path: str | os.PathLike) -> bool:
    """True when `path` was written by `omnijax.module_io.save_module` (config.json has a `kind`)."""
    cfg = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(cfg):
        return False
    return "kind" in read_json(cfg) and os.path.isdir(os.path.join(os.fspath(path), "state"))


def safetensors_files(path: str | os.PathLike) -> list[str]:
    """The safetensors files of an HF directory (one file or an index of shards).

    Raises with a conversion recipe when only pickle weights are present.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not a directory (expected an HF-format checkpoint directory)")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        files = [os.path.join(path, s) for s in shards]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise FileNotFoundError(f"{index} names shards that are missing: {absent}")
        return files
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    pickles = [n for n in PICKLE_NAMES if os.path.exists(os.path.join(path, n))]
    if pickles:
        raise ValueError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); omnijax does not load pickles because "
            "unpickling can run arbitrary code. Convert once with transformers: "
            "`model = AutoModel.from_pretrained(DIR); model.save_pretrained(DIR, safe_serialization=True)` "
            "and load the directory again.")
    others = [n for n in os.listdir(path) if n.endswith(".safetensors")]
    if len(others) == 1:
        return [os.path.join(path, others[0])]
    raise FileNotFoundError(f"{path} has no model.safetensors (or model.safetensors.index.json)")


def _load_file(file: str) -> dict[str, np.ndarray]:
    """One safetensors file as NumPy; bfloat16 files (NumPy has no bf16) go through the flax reader."""
    import safetensors.numpy

    try:
        return safetensors.numpy.load_file(file)
    except (TypeError, ValueError):  # "data type 'bfloat16' not understood"
        import safetensors.flax

        return {k: np.asarray(v) for k, v in safetensors.flax.load_file(file).items()}


def read_safetensors(path: str | os.PathLike, strip_prefixes: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every tensor of the directory as NumPy in its stored dtype (bf16 via ml_dtypes; cast once,
    to the module dtype, in `fill_module`), keys with the first matching prefix removed."""
    out: dict[str, np.ndarray] = {}
    for file in safetensors_files(path):
        for key, arr in _load_file(file).items():
            for p in strip_prefixes:
                if key.startswith(p):
                    key = key[len(p):]
                    break
            out[key] = arr
    return out


def fill_module(build: Callable[[], M], weights: Mapping[tuple, Callable[[], np.ndarray]],
                *, source: str, dtype=jnp.float32) -> M:
    """Build `build()` abstractly and set every parameter from `weights[path]()`.

    `weights` maps each NNX parameter path to a thunk that fetches and lays out the tensor
    (raising KeyError with the HF name when it is absent); every parameter must be covered
    and every shape must match, otherwise the error lists what was expected from `source`.
    """
    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    missing, bad_shape = [], []
    for path, var in flat:
        want = var.get_value().shape
        if path not in weights:
            missing.append(f"{'.'.join(map(str, path))} (no mapping)")
            continue
        try:
            arr = weights[path]()
        except KeyError as e:
            missing.append(str(e.args[0]))
            continue
        if tuple(arr.shape) != tuple(want):
            bad_shape.append(f"{'.'.join(map(str, path))}: checkpoint {tuple(arr.shape)} vs config {tuple(want)}")
            continue
        # Converted one at a time: peak host memory is the checkpoint plus the module, no third copy.
        var.set_value(jnp.asarray(arr, dtype))
    if missing or bad_shape:
        lines = []
        if missing:
            lines.append(f"missing weights ({len(missing)}): " + ", ".join(missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
        if bad_shape:
            lines.append("shape mismatches: " + "; ".join(bad_shape[:8]))
        raise ValueError(f"{source}: checkpoint does not match its config.json: " + " | ".join(lines))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def getter(tensors: Mapping[str, np.ndarray], *names: str,
           transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable[[], np.ndarray]:
    """A thunk fetching the first present of `names` (aliases across HF versions) and laying it out."""

    def get() -> np.ndarray:
        for n in names:
            if n in tensors:
                arr = tensors[n]
                return transform(arr) if transform is not None else arr
        raise KeyError(" or ".join(names))

    return get


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> flax kernel (in, out)."""
    return np.ascontiguousarray(w.T)


def conv1d_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv1d weight (out, in/groups, K) -> flax channels-last kernel (K, in/groups, out)."""
    return np.ascontiguousarray(np.transpose(w, (2, 1, 0)))


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_dtype(name, *, where: str):
    """'float32' | 'bfloat16' | 'float16' (or a jnp dtype) -> jnp dtype."""
    if not isinstance(name, str):
        return name
    if name not in DTYPES:
        raise ValueError(f"{where}: dtype={name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def cast_floats(module: M, dtype) -> M:
    """`module` with every floating-point variable cast to `dtype` (e.g. a restored orbax tree)."""
    if dtype is None or jnp.dtype(dtype) == jnp.float32:
        return module
    graphdef, state = nnx.split(module)
    state = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    return nnx.merge(graphdef, state)
