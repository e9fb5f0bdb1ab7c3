"""The omni-conditions curriculum: which conditions each training stage keeps, and how often.

OmniHuman's two principles: (1) a task with a stronger condition also trains on the data of
the weaker tasks, so samples whose audio or pose failed the filters stay in training with
that condition dropped; (2) the stronger the condition, the lower its keep ratio, so the
model does not lean on it and forget the weaker ones. Text and reference are kept often (a
reference ratio too low causes identity drift on long videos).

`keep_masks` is a pure function of its inputs and the generator, so the data pipeline can
run it per sample with a seeded rng and a restored iterator reproduces it exactly. The
conditions and their draw order are the model's (`omnijax.models.conditions.CONDITIONS`):
a stage has one ratio per condition the MMDiT can be given.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from omnijax.models.conditions import CONDITIONS


@dataclasses.dataclass(frozen=True)
class Stage:
    """Per-condition keep ratios in [0, 1]; 0 means the stage never shows that condition."""

    name: str
    ref: float = 0.9
    text: float = 0.9
    audio: float = 0.0
    pose: float = 0.0

    def __post_init__(self):
        for c in CONDITIONS:
            r = getattr(self, c)
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"stage {self.name!r}: {c} keep ratio must be in [0, 1], got {r}")

    def ratios(self) -> dict[str, float]:
        return {c: getattr(self, c) for c in CONDITIONS}

    def replace(self, **overrides: float) -> "Stage":
        unknown = set(overrides) - set(CONDITIONS) - {"name"}
        if unknown:
            raise ValueError(f"unknown stage fields {sorted(unknown)}; known: {CONDITIONS}")
        return dataclasses.replace(self, **overrides)


# After OmniHuman-1: stage 1 text + reference only; stage 2 adds audio at 0.5; stage 3 adds
# pose at 0.5 with audio at 0.5 (the design's defaults). Ordering principle: text/ref (weak)
# >= audio >= pose (strong); text/ref stay high because a low reference ratio causes drift.
STAGES: dict[int, Stage] = {
    1: Stage("stage1_text_ref", ref=0.9, text=0.9, audio=0.0, pose=0.0),
    2: Stage("stage2_audio", ref=0.9, text=0.9, audio=0.5, pose=0.0),
    3: Stage("stage3_pose", ref=0.9, text=0.9, audio=0.5, pose=0.5),
}


def get_stage(stage: int | str | Stage, overrides: Mapping[str, float] | None = None) -> Stage:
    """A default stage by number (1/2/3) or name, optionally with ratios overridden by config."""
    if isinstance(stage, Stage):
        base = stage
    elif isinstance(stage, str) and not stage.isdigit():
        by_name = {s.name: s for s in STAGES.values()}
        if stage not in by_name:
            raise ValueError(f"unknown stage {stage!r}; known: {sorted(by_name)} or 1/2/3")
        base = by_name[stage]
    else:
        if int(stage) not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
        base = STAGES[int(stage)]
    return base.replace(**dict(overrides)) if overrides else base


def keep_masks(stage: Stage, audio_ok: np.ndarray, pose_ok: np.ndarray,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """-> {'keep_ref','keep_text','keep_audio','keep_pose'}: `(B,)` bool each.

    Each condition is kept independently with its stage ratio; a sample whose audio failed
    the sync filter (`audio_ok` False) or whose keypoints are not visible (`pose_ok` False)
    never keeps that condition, but still trains the weaker ones.
    """
    audio_ok = np.asarray(audio_ok, bool).reshape(-1)
    pose_ok = np.asarray(pose_ok, bool).reshape(-1)
    if audio_ok.shape != pose_ok.shape:
        raise ValueError(f"audio_ok {audio_ok.shape} and pose_ok {pose_ok.shape} must both be (B,)")
    b = audio_ok.shape[0]
    draws = rng.random((len(CONDITIONS), b))  # one fixed draw order: ref, text, audio, pose
    out = {f"keep_{c}": draws[i] < getattr(stage, c) for i, c in enumerate(CONDITIONS)}
    out["keep_audio"] &= audio_ok
    out["keep_pose"] &= pose_ok
    return out
