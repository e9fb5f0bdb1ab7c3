r"""omnijax demo --train --out runs/demo            (this recipe, about 25 minutes on 2 CPU cores)
omnijax demo --train --minutes 120 --out runs/bundle   (the recipe of the bundled demo model)
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
SHARES = {"vae": 0.5, "stage1": 0.05, "stage2": 0.16, "stage3": 0.12}


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
    # Training identities grow with the budget (64 at 25 minutes): the MMDiT's steps grow with
    # it, and the reference must generalise to held-out people rather than be memorised.
    train_clips = 6 if quick else int(min(512, max(64, round(64 * minutes / 25))))
    c.synth = dict(size=size, fps=25.0, seconds=2.0 if quick else 4.0, framing="half", mouth_scale=2.0,
                   train_clips=train_clips, train_seed=0, heldout_clips=3, heldout_seed=1000,
                   heldout_seconds=4.0 if quick else 20.0, out_of_sync=0.15, occluded=0.05, missing=0.05)
    # The VAE trains on 17-frame clips, the windows it encodes for training and decodes when
    # sampling: its causal receptive field is deeper than a few latent frames, so clips of 5
    # or 9 frames leave the later positions of a window untrained (measured: frame 16 at
    # 13.5 dB while frames 0-8 reached 22 dB after 640 steps on 9-frame clips).
    # Batch 2 at lr 3e-3, decoding the posterior mean: per wall-clock second the fastest
    # setting measured for the tiny VAE on this CPU (2 x 17 x 64 x 64 per 0.55 s step).
    # motion_weight 4: a fifth of the weight on still pixels, the rest on what moves between
    # frames (objectives.motion_weights): the mouth and hands. Measured from the plain-loss VAE
    # of 60 minutes (3 held-out clips, streamed round trip): 8 more minutes plain (lr 5e-4) kept
    # its lip-sync at 0.58 of the truth's; 8 minutes motion-weighted took it to 0.79, PSNR unchanged.
    # From scratch at --minutes 120 (the bundled model): the reconstruction's lip-sync 0.97 and
    # the model's 0.91 against the truth's 0.98 (0.55 and 0.51 with the plain loss).
    # cooldown 0.2: the last fifth of the phase's time anneals the rate linearly to
    # final_lr_ratio x lr (demo._cooled; a constant rate stops wherever the clock says).
    # Measured: the constant-rate VAE of 4,096 steps (27.9 dB on the demo's held-out clip),
    # cooled down over 600 more steps, 28.1 dB; from scratch at --minutes 120, 4,922 steps of
    # which the last 984 cool down, 28.2 dB.
    c.vae = dict(size="tiny", frames=5 if quick else 17, batch_size=2, posterior="mean",
                 steps=30 if quick else 100_000, lr=3e-3, ema_decay=0.99, motion_weight=4.0,
                 cooldown=0.2, final_lr_ratio=0.02, stats_clips=8 if quick else 32)
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
