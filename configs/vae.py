r"""python -m omnijax.train --config=configs/vae.py:size=tiny --workdir=runs/vae

Train a small causal VAE on SynthTalk clips (rendered on the fly).

Arg keys: size (a VAEConfig preset: tiny|small|wan21), frames (1 + 4k), res (H = W, a
multiple of 8). Everything else: --config.<key>=<value>.
"""

from __future__ import annotations

from omnijax.models.vae import PRESETS
from omnijax.train import config_lib


def get_config(arg: str | None = None):
    a = config_lib.parse_arg(arg, dict(size="tiny", frames=5, res=32), choices=dict(size=PRESETS))
    if a["frames"] < 1 or (a["frames"] - 1) % 4:
        raise ValueError(f"config arg frames={a['frames']}: expected 1 + 4k frames (1, 5, 9, ...)")
    if a["res"] < 8 or a["res"] % 8:
        raise ValueError(f"config arg res={a['res']}: expected a positive multiple of 8")
    c = config_lib.base()
    c.objective = "vae"
    c.model = dict(size=str(a["size"]))
    # framing / mouth_scale: the SynthTalk camera and mouth range (as `omnijax synth`); train
    # the VAE on the shot it will encode, and on clips as long as the windows it will encode
    # (a causal VAE trained on 5-frame clips reconstructs frames 9..16 of a window poorly)
    c.data = dict(source="synthtalk", seed=0, frames=a["frames"], height=a["res"],
                  width=a["res"], framing="full", mouth_scale=1.0, inject_nan_at=())
    # posterior: sample (decode a posterior draw, the VAE objective) | mean (decode the mean)
    # motion_weight: weight pixels by how much they change between frames (objectives.motion_weights);
    # 0 = the plain per-pixel loss
    c.objective_opts = dict(l1_weight=1.0, l2_weight=1.0, kl_weight=1e-6, posterior="sample",
                            motion_weight=0.0)
    c.lora.targets = ()
    if a["size"] == "tiny":
        c.train.update(steps=300, batch_size=4, compute_dtype="float32", log_every=10)
        c.optim.update(lr=2e-3, warmup_steps=20, decay_steps=300, ema_decay=0.99)
        c.checkpoint.every = 100
    return c
