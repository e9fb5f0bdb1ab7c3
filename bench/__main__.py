"""`python -m bench`: run every benchmark and rewrite bench/RESULTS.md.

    python -m bench [--only mmdit,train] [--out bench/RESULTS.md]   (--only: the other sections stay)

Each script runs in its own process, one after another (they would share the CPU
otherwise), and its printed tables go into RESULTS.md under the command that reproduces
them, with the machine, the versions and the date. bench/gpu_results.md (written by
`bench/gpu.sh` on an accelerator) is merged in as its own section. Run it on an otherwise
idle machine: figures taken under load are not figures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BENCHES = ("mmdit", "train", "vae", "encoders", "data", "sample")


def machine() -> str:
    import jax
    try:
        import torch
        torch_v = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_v = "no torch"
    versions = []
    for name in ("flax", "optax", "orbax.checkpoint", "grain", "diffusers", "transformers"):
        try:
            mod = __import__(name, fromlist=["__version__"])
            versions.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError:
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{jax.devices()[0].device_kind} ({jax.default_backend()}); Python {platform.python_version()}, "
            f"jax {jax.__version__}, {', '.join(versions)}, {torch_v}; load average at start {load:.2f}")


def first_line(script: str) -> str:
    import ast
    doc = ast.get_docstring(ast.parse(open(os.path.join(HERE, f"{script}.py")).read())) or ""
    return doc.split("\n")[0]


def demo_phases(path: str | None = None) -> list[str]:
    """The bundled demo model's phase times, as its `omnijax demo --train` run recorded them
    (`phases.json`: seconds and what each phase reached)."""
    if path is None:
        from omnijax.demo import BUNDLED
        path = os.path.join(BUNDLED, "phases.json")
    if not os.path.exists(path):
        return ["## Demo phases", "", f"No bundled model at {os.path.relpath(path, REPO)}.", ""]
    import json
    done = json.load(open(path))
    rows = ["| phase | minutes | reached |", "|---|---|---|"]
    for name, rec in done.items():
        info = rec.get("info") or {}
        brief = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in info.items() if not isinstance(v, (dict, list)))
        rows.append(f"| {name} | {rec['seconds'] / 60:.1f} | {brief} |")
    total = sum(rec["seconds"] for rec in done.values()) / 60
    return ["## Demo phases (the bundled model's `omnijax demo --train` run)", "",
            f"From `{os.path.relpath(path, REPO)}`; {total:.0f} minutes in all.", "", *rows, ""]


def earlier_sections(path: str) -> dict[str, list[str]]:
    """Script name -> its section's lines in an existing RESULTS.md (kept by --only)."""
    if not os.path.exists(path):
        return {}
    out, name = {}, None
    for line in open(path).read().split("\n"):
        if line.startswith("## "):
            head = line[3:].split(":", 1)[0]
            name = head if head in BENCHES else None
            if name:
                out[name] = []
        if name:
            out[name].append(line)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES}")
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument("--args", action="append", default=[], help="NAME=ARGS extra arguments for one script")
    a = p.parse_args(argv)
    extra = dict(x.split("=", 1) for x in a.args)
    names = [n for n in a.only.split(",") if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmarks {sorted(unknown)}; known: {BENCHES}")
    parts = ["# Benchmark results", "",
             f"Written by `python -m bench` on {datetime.date.today()}. Machine: {machine()}.", "",
             "Each section is one script's printed output, with the command that reproduces it. "
             "Ratios are measured in the same run against the peer named in the table.", ""]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    kept = earlier_sections(a.out) if set(names) != set(BENCHES) else {}
    for name in BENCHES:
        if name not in names:
            if name in kept:            # --only: the other scripts' sections stay as they were
                parts += kept[name]
            continue
        cmd = [sys.executable, os.path.join("bench", f"{name}.py"), *extra.get(name, "").split()]
        print(f"[bench] {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        took = time.perf_counter() - t0
        out = run.stdout.strip() or "(no output)"
        status = "" if run.returncode == 0 else f" -- FAILED (exit {run.returncode}): {run.stderr.strip()[-400:]}"
        parts += [f"## {name}: {first_line(name)}", "", f"`python {' '.join(cmd[1:])}` ({took:.0f} s){status}", "",
                  "```", out, "```", ""]
        print(f"[bench] {name}: {took:.0f} s{status}", flush=True)
    parts += demo_phases()
    gpu = os.path.join(HERE, "gpu_results.md")
    if os.path.exists(gpu):
        parts += [open(gpu).read().strip(), ""]
    else:
        parts += ["## GPU figures", "", "None recorded: run `bench/gpu.sh` on a machine with an accelerator.", ""]
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, a.out)
    print(f"[bench] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
