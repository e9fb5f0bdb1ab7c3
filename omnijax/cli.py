"""`omnijax <command> ...`: one entry point that dispatches to each stage's own `main`.

Each command lives in the module that owns its concern; this file only knows their names,
so `omnijax --help` stays fast (nothing heavy is imported until a command runs).
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with `main(argv) -> int | None`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("omnijax.demo", "a generated talking video + its evaluation (bundled model, or --train)"),
    "synth": ("omnijax.data.synthetic", "render SynthTalk clips (mp4 + audio + keypoints + caption)"),
    "preprocess": ("omnijax.data.preprocess", "clips -> cached latents/audio/pose/text ArrayRecord shards"),
    "train": ("omnijax.train.main", "train the VAE or the MMDiT from a config file"),
    "export": ("omnijax.export", "training run -> inference directory (EMA, bf16, recipe; --serialize)"),
    "sample": ("omnijax.sample.command", "photo + audio / pose / text -> mp4 of any length"),
    "eval": ("omnijax.eval.command", "lip-sync, pose, identity drift and seams of exported models, from pixels"),
    "convert": ("omnijax.convert", "safetensors (Wan2.1 VAE, wav2vec2, T5) -> orbax checkpoints"),
    "presets": ("omnijax.presets", "list model presets with parameter counts and FLOPs per token"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: omnijax <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`omnijax <command> --help` describes each command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--debug":  # tracebacks for user errors too
        import os
        os.environ["OMNIJAX_DEBUG"] = "1"
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"omnijax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from omnijax.errors import EXIT_USAGE, UsageError, debug_enabled

    try:
        module = importlib.import_module(COMMANDS[name][0])
        result = module.main(rest)
    except UsageError as e:
        if debug_enabled():
            raise
        print(f"omnijax {name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
