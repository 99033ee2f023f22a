"""Connected-digit strings (TIDIGITS-like) composed from isolated-digit recordings of one speaker.

Isolated digits joined by pauses are not how people read a phone number: fluent strings run words
together, and the end of "eight" merges into the next word. So a fraction of the training strings can be
joined *tightly*: each word trimmed to its speech, and neighbours separated by at most a short pause or
overlapped with a cross-fade. Fluent speech also shortens the words inside a string (an isolated digit
carries the lengthening of a phrase's end), so tight strings can speed up every word but the last, pitch
kept. Test and validation strings keep the plain joins, so their figures stay comparable across corpora.

Every random choice of an utterance is drawn first into a plan; audio is rendered from the plan. So a
build is deterministic given its seed, and an interrupted build resumes by rendering the missing files.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asr.augment import time_stretch
from asr.data.fsdd import DIGIT_WORDS, Recording
from asr.speech_span import loud_span

STRETCH_FFT = 256  # 32 ms at 8 kHz: the vocoder's window; shorter words are left alone


@dataclass(frozen=True)
class CompositionConfig:
    """How strings are joined: length range, pauses, level jitter and a faint noise floor.

    The noise floor (far below FSDD's own background) keeps pauses from being digital silence,
    which never occurs in a microphone signal. ``tight_fraction`` of the training strings use the tight
    joins: words cut where their frame energy is ``trim_db`` below their peak, interior gaps drawn from
    ``tight_gap_seconds`` (negative: that much overlap, cross-faded), and each word followed by a join played
    faster by a factor drawn from [1, ``join_tempo_max``] (1: words keep their length).
    """

    min_digits: int = 1
    max_digits: int = 7
    gap_seconds: tuple[float, float] = (0.02, 0.30)
    edge_seconds: tuple[float, float] = (0.05, 0.35)
    word_level_jitter_db: float = 3.0
    utterance_level_jitter_db: float = 6.0
    noise_floor_dbfs: float = -70.0
    tight_fraction: float = 0.0
    tight_gap_seconds: tuple[float, float] = (-0.08, 0.05)
    trim_db: float = 30.0
    join_tempo_max: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.join_tempo_max <= 2.0:
            raise ValueError(f"join_tempo_max must be in [1, 2], not {self.join_tempo_max:g}")


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
    trim_db: float | None = None  # set for tight joins: words are trimmed and gaps may be negative
    tempos: tuple[float, ...] | None = None  # tight joins with join_tempo_max > 1: each word's speed-up

    @property
    def text(self) -> str:
        return " ".join(DIGIT_WORDS[d] for d in self.digits)


def stable_seed(seed: int, *names: str) -> int:
    """A seed that depends on names reproducibly (Python's str hash is salted per process)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**31)


def plan_split(
    recordings: list[Recording],
    split: str,
    count: int,
    seed: int,
    config: CompositionConfig,
    tight_joins: bool = False,
) -> list[UtterancePlan]:
    """Draw ``count`` utterances, each from one speaker's recordings of this split only.

    With ``tight_joins``, ``config.tight_fraction`` of them get tight joins. Those draws come from a
    generator of their own, so the plain strings are the same with or without them (and the tight ones the
    same with or without speed-ups: their tempos are drawn last, from one more generator).
    """
    by_speaker_digit: dict[str, dict[int, list[Recording]]] = defaultdict(lambda: defaultdict(list))
    for recording in recordings:
        by_speaker_digit[recording.speaker][recording.digit].append(recording)
    speakers = sorted(by_speaker_digit)
    if not speakers:
        raise ValueError(f"split {split!r} has no recordings")
    rng = np.random.default_rng(stable_seed(seed, "plan", split))
    joins_rng = np.random.default_rng(stable_seed(seed, "joins", split))
    tempo_rng = np.random.default_rng(stable_seed(seed, "tempo", split))
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
        trim_db = tempos = None
        if tight_joins and joins_rng.random() < config.tight_fraction:
            trim_db = config.trim_db
            interior = tuple(float(joins_rng.uniform(*config.tight_gap_seconds)) for _ in range(length - 1))
            gaps = (gaps[0], *interior, gaps[-1])
            if config.join_tempo_max > 1.0:
                inner = tuple(float(tempo_rng.uniform(1.0, config.join_tempo_max)) for _ in range(length - 1))
                tempos = (*inner, 1.0)
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
                trim_db=trim_db,
                tempos=tempos,
            )
        )
    return plans


def trim_to_speech(word: np.ndarray, sample_rate: int, trim_db: float) -> np.ndarray:
    """The part of ``word`` whose 10 ms frames are within ``trim_db`` of its loudest frame."""
    start, end = loud_span(word, sample_rate, trim_db, above_floor_db=None)
    return word[start:end]


def speed_up(word: np.ndarray, tempo: float) -> np.ndarray:
    """``word`` played ``tempo`` times as fast, pitch kept; words shorter than the vocoder's window stay."""
    if tempo == 1.0 or len(word) <= STRETCH_FFT:
        return word
    return time_stretch(torch.from_numpy(np.ascontiguousarray(word, np.float32)), tempo, STRETCH_FFT).numpy()


def _join(signal: np.ndarray, word: np.ndarray, gap_samples: int) -> np.ndarray:
    """Append ``word`` after a pause, or overlapping the end of ``signal`` with a raised-cosine cross-fade."""
    if gap_samples >= 0:
        return np.concatenate([signal, np.zeros(gap_samples, np.float32), word])
    # at most half of either side overlaps, so no word is buried under its neighbour
    overlap = min(-gap_samples, len(signal) // 2, len(word) // 2)
    if overlap == 0:
        return np.concatenate([signal, word])
    fade_in = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, overlap))).astype(np.float32)
    mixed = signal[len(signal) - overlap :] * fade_in[::-1] + word[:overlap] * fade_in
    return np.concatenate([signal[: len(signal) - overlap], mixed, word[overlap:]])


def render(
    words: list[np.ndarray],
    gaps: tuple[float, ...],
    word_gains_db: tuple[float, ...],
    utterance_gain_db: float,
    noise_seed: int,
    sample_rate: int,
    config: CompositionConfig,
    trim_db: float | None = None,
    tempos: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Join word waveforms with the planned pauses and gains; ``gaps`` has one more entry than words.

    With ``trim_db`` each word is first trimmed to its speech and interior gaps may be negative (overlaps);
    ``tempos`` (one per word) then speeds words up.
    """
    signal = np.zeros(int(round(gaps[0] * sample_rate)), dtype=np.float32)
    for index, (word, gain_db) in enumerate(zip(words, word_gains_db, strict=True)):
        if trim_db is not None:
            word = trim_to_speech(word, sample_rate, trim_db)
        if tempos is not None:
            word = speed_up(word, tempos[index])
        word = word.astype(np.float32) * np.float32(10 ** (gain_db / 20))
        signal = _join(signal, word, 0 if index == 0 else int(round(gaps[index] * sample_rate)))
    signal = np.concatenate([signal, np.zeros(int(round(gaps[-1] * sample_rate)), dtype=np.float32)])
    signal = signal * np.float32(10 ** (utterance_gain_db / 20))
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
        words,
        plan.gaps,
        plan.word_gains_db,
        plan.utterance_gain_db,
        plan.noise_seed,
        sample_rate,
        config,
        plan.trim_db,
        plan.tempos,
    )
