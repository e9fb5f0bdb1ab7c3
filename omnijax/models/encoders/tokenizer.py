"""The T5 tokenizer read from a checkpoint directory, without transformers.

Two sources, in order of preference:
  * `tokenizer.json` (what `T5TokenizerFast` / transformers 5 `save_pretrained` writes), run
    by the `tokenizers` library with its own post-processor (which appends `</s>`);
  * `spiece.model` (the original SentencePiece model), run by `sentencepiece`, with `</s>`
    appended as transformers' T5 tokenizer does.
Both give ids `(B, L)` padded with the pad id to exactly `max_length` and a mask `(B, L)`;
texts longer than that are cut, keeping the closing `</s>`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from omnijax.models.encoders import hf_checkpoint as hf

TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")


def _special(path: str, key: str, default: str) -> str:
    """A special token string from tokenizer_config.json / special_tokens_map.json, if set."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = os.path.join(path, name)
        if os.path.isfile(f):
            value = hf.read_json(f).get(key)
            if isinstance(value, dict):  # {"content": "<pad>", ...}
                value = value.get("content")
            if isinstance(value, str):
                return value
    return default


def find_tokenizer_dir(path: str | os.PathLike) -> str | None:
    """The directory holding the tokenizer for a model at `path`: `path` itself, `path/tokenizer`,
    or a sibling `tokenizer/` (diffusers pipelines keep `text_encoder/` and `tokenizer/` side by side)."""
    path = os.path.abspath(os.fspath(path))
    for d in (path, os.path.join(path, "tokenizer"), os.path.join(os.path.dirname(path), "tokenizer")):
        if any(os.path.isfile(os.path.join(d, f)) for f in ("tokenizer.json", "spiece.model")):
            return d
    return None


class T5Tokenizer:
    def __init__(self, path: str | os.PathLike):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory {os.fspath(path)} does not exist")
        path = find_tokenizer_dir(path) or os.fspath(path)
        self.path = path
        tok_json, spm = os.path.join(path, "tokenizer.json"), os.path.join(path, "spiece.model")
        pad, eos = _special(path, "pad_token", "<pad>"), _special(path, "eos_token", "</s>")
        if os.path.isfile(tok_json):
            from tokenizers import Tokenizer

            self.backend = "tokenizers"
            self._tok = Tokenizer.from_file(tok_json)
            self._tok.no_truncation()
            self._tok.no_padding()
            self.pad_id = self._tok.token_to_id(pad)
            self.eos_id = self._tok.token_to_id(eos)
            self.vocab_size = self._tok.get_vocab_size()
        elif os.path.isfile(spm):
            import sentencepiece

            self.backend = "sentencepiece"
            self._sp = sentencepiece.SentencePieceProcessor(model_file=spm)
            self.pad_id = self._sp.piece_to_id(pad)
            self.eos_id = self._sp.piece_to_id(eos)
            self.vocab_size = self._sp.get_piece_size()
        else:
            raise FileNotFoundError(f"{path}: no tokenizer.json or spiece.model here, in {path}/tokenizer or in a "
                                    "sibling tokenizer/ directory; copy the checkpoint's tokenizer files next to "
                                    "the weights or pass tokenizer=DIR")
        if self.pad_id is None or self.eos_id is None:
            raise ValueError(f"{path}: tokenizer has no id for pad {pad!r} or eos {eos!r}")

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, with the closing `</s>`, untruncated."""
        if self.backend == "tokenizers":
            return self._tok.encode(text, add_special_tokens=True).ids
        return list(self._sp.encode(text)) + [self.eos_id]

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """-> ids `(B, max_length)` int32 and mask `(B, max_length)` bool (True = real token)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not one string")
        ids = np.full((len(texts), max_length), self.pad_id, np.int32)
        mask = np.zeros((len(texts), max_length), bool)
        for i, text in enumerate(texts):
            seq = self.encode(text)
            if len(seq) > max_length:  # cut the text, keep the closing </s> (as HF truncation does)
                seq = seq[: max_length - 1] + [seq[-1]]
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = True
        return ids, mask
