r"""omnijax demo --train --out runs/demo            (this recipe, about 25 minutes on 2 CPU cores)
omnijax demo --train --minutes 240 --out runs/bundle   (the recipe of the bundled demo model)
omnijax demo --quick --out runs/quick            (toy sizes: the plumbing in about 3 minutes)

The whole system from scratch on SynthTalk: training and held-out identities -> the causal
VAE -> preprocess -> MMDiT stages 1 -> 2 -> 3 -> export (stage 2 and 3) -> a chained
video of a held-out identity -> evaluation. Each phase's budget is a share of `minutes`
(wall clock: a phase stops at its budget with a checkpoint, or at its step cap).

Arg keys: quick (toy sizes), minutes (total budget). Everything else: edit the dict below
or pass --config.<key>=<value> to `python -m omnijax.demo`-style callers.
"""

from __future__ import annotations

import ml_collections

from omnijax.train import config_lib

# What fraction of the budget each timed phase gets (the rest: synth, preprocess, export,
# sampling, evaluation, compiles).
SHARES = {"vae": 0.42, "stage1": 0.06, "stage2": 0.2, "stage3": 0.14}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_lib.parse_arg(arg, dict(quick=False, minutes=25.0))
    quick, minutes = bool(a["quick"]), float(a["minutes"])
    if minutes <= 0:
        raise ValueError(f"config arg minutes={minutes}: expected a positive number of minutes")
    c = ml_collections.ConfigDict()
    c.quick, c.minutes = quick, minutes
    size = 32 if quick else 64
    # SynthTalk: a medium shot with a wide-opening mouth, so the mouth is several pixels tall
    # at the demo's size while the hands stay in frame (see `omnijax synth --help`).
    c.synth = dict(size=size, fps=25.0, seconds=2.0 if quick else 4.0, framing="half", mouth_scale=2.0,
                   train_clips=6 if quick else 64, train_seed=0, heldout_clips=3, heldout_seed=1000,
                   heldout_seconds=4.0 if quick else 20.0, out_of_sync=0.15, occluded=0.05, missing=0.05)
    # The VAE trains on 9-frame clips: 3 latent frames reach the causal cache's steady state,
    # so it encodes the 17-frame windows (and any length) as well as its training clips.
    c.vae = dict(size="tiny", frames=5 if quick else 9, batch_size=2 if quick else 4,
                 steps=30 if quick else 100_000, lr=2e-3, ema_decay=0.99, stats_clips=8 if quick else 32)
    c.preprocess = dict(bucket=f"17x{size}x{size}", stride=8 if quick else 4, audio_encoder="mel",
                        text_encoder="bytes")
    # MMDiT: the tiny preset; a stage's step cap is far above what its budget allows on a CPU.
    c.mmdit = dict(size="tiny", batch_size=8, lr=1e-3, ema_decay=0.999)
    c.stages = dict(stage1=30 if quick else 100_000, stage2=30 if quick else 100_000,
                    stage3=30 if quick else 100_000)
    c.sample = dict(solver="unipc", steps=6 if quick else 20, cfg_text=(2.0, 2.0), cfg_audio=(6.0, 3.0),
                    schedule="linear")
    c.eval = dict(reference_seconds=2.0 if quick else 8.0)
    c.shares = dict(SHARES)
    return c
