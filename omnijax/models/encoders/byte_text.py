"""A weight-free text encoder: UTF-8 bytes through a fixed, seeded random embedding.

For training from scratch (SynthTalk, the demo) where no pretrained T5 is at hand. The
table is frozen and reproducible from its seed, so cached states never go stale; the
MMDiT's text stream (its input projection and blocks) is what learns to read it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ByteTextEncoder:
    dim: int = 64
    max_length: int = 64
    seed: int = 0
    name: str = "bytes"

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        tokens = rng.standard_normal((257, self.dim)).astype(np.float32)  # 0 = padding
        tokens[0] = 0.0
        pos = np.arange(self.max_length)[:, None] / (10000 ** (np.arange(0, self.dim, 2) / self.dim))
        table = np.zeros((self.max_length, self.dim), np.float32)
        table[:, 0::2] = np.sin(pos)
        table[:, 1::2] = np.cos(pos[:, : self.dim // 2])
        return tokens, table

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """-> ids `(B, L)` int32: byte + 1, 0 for padding; texts past L bytes are cut."""
        ids = np.zeros((len(texts), self.max_length), np.int32)
        for i, text in enumerate(texts):
            b = np.frombuffer(text.encode("utf-8")[: self.max_length], np.uint8)
            ids[i, : b.size] = b.astype(np.int32) + 1
        return ids

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not one string")
        tokens, positions = self._tables()
        ids = self.tokenize(texts)
        mask = ids > 0
        states = (tokens[ids] + positions[None]) * mask[..., None]
        return states.astype(np.float32), mask
