"""Writing evaluation results: strict JSON (a figure with nothing to measure is null, never
NaN), written to a temporary name and renamed, so an eval.json is never half-written."""

from __future__ import annotations

import json
import os

import numpy as np


def json_safe(x):
    """NaN / inf -> None, numpy scalars -> Python, through dicts, lists and tuples."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(path: str, blob: dict) -> str:
    """`blob` (made json_safe) -> `path`, via a temporary file renamed when whole."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(json_safe(blob), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
