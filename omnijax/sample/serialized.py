"""The segment program through `jax.export`: run an exported model without its code.

    EXPORT_DIR/serialized/segment.jaxexport   StableHLO of `segment(param_leaves, inputs)`
    EXPORT_DIR/serialized/params.safetensors  the parameters as a flat list ("p00000", ...)
    EXPORT_DIR/serialized/signature.json      input names/shapes/dtypes, the sampling spec

`write(export_dir)` traces the segment function of `omnijax.sample.segment` for one fixed
shape (batch 1, the export's segment shape) with the export's sampler defaults and every
guided condition in the chain (absent ones are switched off per call by `has_*` flags), and
with XLA attention: cuDNN's custom calls are not on jax.export's list of stable calls.
Parameters are arguments, not constants, so the program stays small and one set of
weights serves it. `load(export_dir)` returns `fn(inputs) -> latents` that needs no MMDiT
code: a deployment can run it with only jax installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

DIR = "serialized"
PROGRAM, PARAMS, SIGNATURE = "segment.jaxexport", "params.safetensors", "signature.json"


def segment_spec(meta: Mapping[str, Any]):
    """The SegmentSpec an export's defaults describe (all guided conditions in the chain)."""
    from omnijax.sample.segment import SegmentSpec
    d = meta["sampler"]
    return SegmentSpec(solver=d["solver"], steps=int(d["steps"]), shift=float(meta["recipe"]["flow_shift"]),
                       cfg_text=tuple(d["cfg_text"]), cfg_audio=tuple(d["cfg_audio"]),
                       schedule=d["schedule"], use_text=True, use_audio=True)


def write(export_dir: str, *, batch: int = 1) -> str:
    """Serialize the segment program of the export at `export_dir` into its serialized/."""
    from flax import nnx
    from safetensors.flax import save_file

    from omnijax.models import mmdit
    from omnijax.sample.bundle import read_meta
    from omnijax.sample.segment import denoise_segment, input_spec

    meta = read_meta(export_dir)
    model = mmdit.load(os.path.join(export_dir, "mmdit"), attention="xla")
    spec = segment_spec(meta)
    graphdef, params = nnx.split(model)
    leaves, treedef = jax.tree.flatten(params)
    r = meta["recipe"]
    text_len = int(meta.get("text_len", 64))
    inputs = input_spec(model.config, batch, r["latent_frames"], r["latent_height"], r["latent_width"],
                        text_len)

    def segment(param_leaves, inputs):
        return denoise_segment(graphdef, jax.tree.unflatten(treedef, param_leaves), spec, inputs)

    abstract_leaves = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    exported = jax.export.export(jax.jit(segment))(abstract_leaves, inputs)
    out = os.path.join(export_dir, DIR)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, PROGRAM), "wb") as f:
        f.write(exported.serialize())
    save_file({f"p{i:05d}": x for i, x in enumerate(leaves)}, os.path.join(out, PARAMS))
    signature = {"inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
                 "params": len(leaves), "spec": dataclasses.asdict(spec), "batch": batch,
                 "platforms": list(exported.platforms)}
    with open(os.path.join(out, SIGNATURE), "w") as f:
        json.dump(signature, f, indent=1)
    return out


def load(export_dir: str) -> Callable[[Mapping[str, np.ndarray]], jax.Array]:
    """`fn(inputs) -> latents (B, F, h, w, c)` from serialized/ alone (no model code)."""
    from safetensors.flax import load_file

    from omnijax.errors import UsageError

    root = os.path.join(export_dir, DIR)
    if not os.path.exists(os.path.join(root, PROGRAM)):
        raise UsageError(f"{export_dir!r} has no serialized program: export it with --serialize")
    with open(os.path.join(root, PROGRAM), "rb") as f:
        exported = jax.export.deserialize(f.read())
    with open(os.path.join(root, SIGNATURE)) as f:
        signature = json.load(f)
    tensors = load_file(os.path.join(root, PARAMS))
    leaves = [tensors[f"p{i:05d}"] for i in range(signature["params"])]
    names = list(signature["inputs"])

    def run(inputs: Mapping[str, np.ndarray]) -> jax.Array:
        missing = set(names) - set(inputs)
        if missing:
            raise ValueError(f"serialized segment needs inputs {sorted(missing)}")
        args = {k: np.asarray(inputs[k], signature["inputs"][k]["dtype"]) for k in names}
        for k in names:
            if list(args[k].shape) != signature["inputs"][k]["shape"]:
                raise ValueError(f"input {k!r} must be {signature['inputs'][k]['shape']}, got {list(args[k].shape)}")
        return exported.call(leaves, args)

    run.signature = signature
    return run
