"""`omnijax presets`: every model preset with its size and cost, counted without allocating.

MMDiT FLOPs use the usual dense-transformer count (say so wherever they are quoted):
    training  = 6 x params x tokens + 12 x layers x tokens^2 x width   (attention is bidirectional)
    forward   = 1/3 of that
per visual token at a given sequence length (`--tokens`, default: 81 frames of 480x832 video,
i.e. 21 x 30 x 52 patch tokens, Wan2.1's 480p setting). The count is an upper bound on the
parameter term: text-stream and condition weights see fewer tokens than the visual stream.
"""

from __future__ import annotations

import argparse
import sys

WAN_480P_TOKENS = 21 * 30 * 52


def train_flops_per_token(params: int, depth: int, width: int, tokens: int) -> float:
    """6 N + 12 L T W per token (see module doc)."""
    return 6.0 * params + 12.0 * depth * tokens * width


def forward_flops_per_token(params: int, depth: int, width: int, tokens: int) -> float:
    return train_flops_per_token(params, depth, width, tokens) / 3.0


def mmdit_rows(tokens: int) -> list[dict]:
    from omnijax.models.mmdit import PRESETS, MMDiTConfig, num_params

    rows = []
    for name in PRESETS:
        cfg = MMDiTConfig.preset(name)
        n = num_params(cfg)
        rows.append(dict(preset=name, width=cfg.width, depth=cfg.depth, heads=cfg.heads, ffn=cfg.ffn,
                         params=n, fwd=forward_flops_per_token(n, cfg.depth, cfg.width, tokens),
                         train=train_flops_per_token(n, cfg.depth, cfg.width, tokens),
                         dtype=cfg.dtype, remat=cfg.remat))
    return rows


def vae_rows() -> list[dict] | str:
    """VAE presets, or a note saying why they cannot be listed."""
    try:
        from omnijax.models.vae import PRESETS, VAEConfig, count_params
    except ImportError as e:  # the VAE module is optional for this listing
        return f"(VAE presets unavailable: {e})"
    rows = []
    for name in PRESETS:
        cfg = VAEConfig.preset(name)
        rows.append(dict(preset=name, base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=cfg.dim_mult,
                         compression=f"{cfg.time_factor}x{cfg.space_factor}x{cfg.space_factor}",
                         params=count_params(cfg)))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows])


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="omnijax presets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=WAN_480P_TOKENS,
                   help=f"visual tokens per sample for the attention FLOPs (default {WAN_480P_TOKENS})")
    p.add_argument("--only", choices=("mmdit", "vae"), help="list one model family")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.tokens < 1:
        p.error("--tokens must be positive")

    if args.only in (None, "mmdit"):
        rows = mmdit_rows(args.tokens)
        print(f"MMDiT presets (FLOPs per visual token at {args.tokens:,} tokens; "
              "train = 6 N + 12 L T W, forward = 1/3)")
        print(_table(["preset", "width", "depth", "heads", "ffn", "params", "fwd FLOP/tok", "train FLOP/tok",
                      "dtype", "remat"],
                     [[r["preset"], str(r["width"]), str(r["depth"]), str(r["heads"]), str(r["ffn"]),
                       f"{r['params']:,}", _si(r["fwd"]), _si(r["train"]), r["dtype"], r["remat"]]
                      for r in rows]))
    if args.only in (None, "vae"):
        rows = vae_rows()
        print("\nVAE presets")
        if isinstance(rows, str):
            print(rows)
        else:
            print(_table(["preset", "base_dim", "z_dim", "dim_mult", "compression (t x h x w)", "params"],
                         [[r["preset"], str(r["base_dim"]), str(r["z_dim"]), str(r["dim_mult"]),
                           r["compression"], f"{r['params']:,}"] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
