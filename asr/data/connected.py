"""Connected-digit strings (TIDIGITS-like) composed from isolated-digit recordings of one speaker.

Every random choice of an utterance is drawn first into a plan; audio is rendered from the plan. So a
build is deterministic given its seed, and an interrupted build resumes by rendering the missing files.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asr.data.fsdd import DIGIT_WORDS, Recording


@dataclass(frozen=True)
class CompositionConfig:
    """How strings are joined: length range, pauses, level jitter and a faint noise floor.

    The noise floor (far below FSDD's own background) keeps pauses from being digital silence,
    which never occurs in a microphone signal.
    """

    min_digits: int = 1
    max_digits: int = 7
    gap_seconds: tuple[float, float] = (0.02, 0.30)
    edge_seconds: tuple[float, float] = (0.05, 0.35)
    word_level_jitter_db: float = 3.0
    utterance_level_jitter_db: float = 6.0
    noise_floor_dbfs: float = -70.0


@dataclass(frozen=True)
class UtterancePlan:
    """All random draws of one connected-digit utterance: words, their sources, pauses and gains."""

    utterance_id: str
    speaker: str
    digits: tuple[int, ...]
    sources: tuple[str, ...]
    gaps: tuple[float, ...]
    word_gains_db: tuple[float, ...]
    utterance_gain_db: float
    noise_seed: int

    @property
    def text(self) -> str:
        return " ".join(DIGIT_WORDS[d] for d in self.digits)


def stable_seed(seed: int, *names: str) -> int:
    """A seed that depends on names reproducibly (Python's str hash is salted per process)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**31)


def plan_split(
    recordings: list[Recording], split: str, count: int, seed: int, config: CompositionConfig
) -> list[UtterancePlan]:
    """Draw ``count`` utterances, each from one speaker's recordings of this split only."""
    by_speaker_digit: dict[str, dict[int, list[Recording]]] = defaultdict(lambda: defaultdict(list))
    for recording in recordings:
        by_speaker_digit[recording.speaker][recording.digit].append(recording)
    speakers = sorted(by_speaker_digit)
    if not speakers:
        raise ValueError(f"split {split!r} has no recordings")
    rng = np.random.default_rng(stable_seed(seed, "plan", split))
    plans = []
    for number in range(count):
        speaker = speakers[rng.integers(len(speakers))]
        available = sorted(by_speaker_digit[speaker])
        length = int(rng.integers(config.min_digits, config.max_digits + 1))
        digits = tuple(int(available[rng.integers(len(available))]) for _ in range(length))
        sources = tuple(
            by_speaker_digit[speaker][d][rng.integers(len(by_speaker_digit[speaker][d]))].path for d in digits
        )
        gaps = (
            (float(rng.uniform(*config.edge_seconds)),)
            + tuple(float(rng.uniform(*config.gap_seconds)) for _ in range(length - 1))
            + (float(rng.uniform(*config.edge_seconds)),)
        )
        jitter = config.word_level_jitter_db
        plans.append(
            UtterancePlan(
                utterance_id=f"{split}_{number:05d}_{speaker}",
                speaker=speaker,
                digits=digits,
                sources=sources,
                gaps=gaps,
                word_gains_db=tuple(float(rng.uniform(-jitter, jitter)) for _ in digits),
                utterance_gain_db=float(rng.uniform(-config.utterance_level_jitter_db, 0.0)),
                noise_seed=int(rng.integers(2**31)),
            )
        )
    return plans


def render(
    words: list[np.ndarray],
    gaps: tuple[float, ...],
    word_gains_db: tuple[float, ...],
    utterance_gain_db: float,
    noise_seed: int,
    sample_rate: int,
    config: CompositionConfig,
) -> np.ndarray:
    """Join word waveforms with the planned pauses and gains; ``gaps`` has one more entry than words."""
    pieces = []
    for word, gap, gain_db in zip(words, gaps, word_gains_db, strict=False):
        pieces.append(np.zeros(int(round(gap * sample_rate)), dtype=np.float32))
        pieces.append(word.astype(np.float32) * np.float32(10 ** (gain_db / 20)))
    pieces.append(np.zeros(int(round(gaps[-1] * sample_rate)), dtype=np.float32))
    signal = np.concatenate(pieces) * np.float32(10 ** (utterance_gain_db / 20))
    noise = np.random.default_rng(noise_seed).standard_normal(signal.shape[0]).astype(np.float32)
    signal = signal + noise * np.float32(10 ** (config.noise_floor_dbfs / 20))
    peak = float(np.abs(signal).max())
    return signal / peak * 0.99 if peak > 0.99 else signal


def render_plan(
    plan: UtterancePlan,
    load_word: Callable[[str], np.ndarray],
    sample_rate: int,
    config: CompositionConfig,
) -> np.ndarray:
    """Render one planned utterance, reading each source recording through ``load_word``."""
    words = [load_word(source) for source in plan.sources]
    return render(
        words, plan.gaps, plan.word_gains_db, plan.utterance_gain_db, plan.noise_seed, sample_rate, config
    )
