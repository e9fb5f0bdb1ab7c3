"""Frozen condition encoders, resolved from spec strings `name[:PATH][:k=v,k=v]`.

Audio (waveform -> `(T, D)` per video frame):
  `mel`                       log-mel, weight-free default (`mel:n_mels=64`)
  `wav2vec2:PATH`             wav2vec2 hidden states; options `layers=last|all|N|A-B|A+B`,
                              `reduce=concat|mean`, `bucket_seconds`, `chunk_seconds`, `context_seconds`
Text (strings -> states `(B, L, D)` + mask `(B, L)`):
  `bytes`                     seeded byte embedding, weight-free default (`bytes:dim=128`)
  `t5:PATH`                   T5 / umT5 encoder + its tokenizer; options `max_length`, `batch_size`
PATH is an HF-format directory (config.json + safetensors [+ tokenizer files]) or an
omnijax orbax directory made by `omnijax convert wav2vec2|t5 SRC DST`.
"""

from __future__ import annotations

import importlib

from omnijax.models.encoders.base import AudioEncoder, TextEncoder, to_video_rate

# name -> "module:factory"; a factory takes (path_or_None, **options) and returns an encoder.
AUDIO_ENCODERS = {
    "mel": "omnijax.models.encoders.mel:MelEncoder",
    "wav2vec2": "omnijax.models.encoders.wav2vec2:audio_encoder_from_spec",
}
TEXT_ENCODERS = {
    "bytes": "omnijax.models.encoders.byte_text:ByteTextEncoder",
    "t5": "omnijax.models.encoders.t5:text_encoder_from_spec",
}


def _parse(spec: str) -> tuple[str, str | None, dict]:
    """'name[:path][:k=v,k=v]' -> (name, path, options). Values are int/float when they parse."""
    name, _, rest = spec.partition(":")
    path, options = None, {}
    for part in filter(None, rest.split(":")) if rest else []:
        if "=" in part:
            for kv in part.split(","):
                k, _, v = kv.partition("=")
                for cast in (int, float):
                    try:
                        v = cast(v)
                        break
                    except ValueError:
                        pass
                options[k] = v
        else:
            path = part if path is None else f"{path}:{part}"
    return name, path, options


def _build(registry: dict, spec: str, kind: str):
    name, path, options = _parse(spec)
    if name not in registry:
        raise ValueError(f"unknown {kind} encoder {name!r} in spec {spec!r}; known: {sorted(registry)}")
    module, _, factory = registry[name].partition(":")
    fn = getattr(importlib.import_module(module), factory)
    return fn(path, **options) if path is not None or name in ("wav2vec2", "t5") else fn(**options)


def get_audio_encoder(spec: str = "mel") -> AudioEncoder:
    return _build(AUDIO_ENCODERS, spec, "audio")


def get_text_encoder(spec: str = "bytes") -> TextEncoder:
    return _build(TEXT_ENCODERS, spec, "text")


__all__ = ["AudioEncoder", "TextEncoder", "get_audio_encoder", "get_text_encoder", "to_video_rate"]
