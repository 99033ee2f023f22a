"""Word and character error counts through jiwer, kept as counts so they add up across batches and ranks."""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass
class ErrorCounts:
    """Edit operations against reference length; WER = errors / reference words."""

    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0

    def __iadd__(self, other: ErrorCounts) -> ErrorCounts:
        self.word_errors += other.word_errors
        self.words += other.words
        self.char_errors += other.char_errors
        self.chars += other.chars
        return self

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)


def error_counts(references: list[str], hypotheses: list[str]) -> ErrorCounts:
    """Counts for aligned reference/hypothesis lists. Empty references count every hypothesis word as an
    insertion (jiwer refuses empty references, but a silent test file is a legitimate input)."""
    counts = ErrorCounts()
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        if not reference.strip():
            counts.word_errors += len(hypothesis.split())
            counts.char_errors += len(hypothesis.replace(" ", ""))
    if pairs:
        refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
        words = jiwer.process_words(refs, hyps)
        chars = jiwer.process_characters(refs, hyps)
        counts.word_errors += words.substitutions + words.deletions + words.insertions
        counts.words += sum(len(r.split()) for r in refs)
        counts.char_errors += chars.substitutions + chars.deletions + chars.insertions
        counts.chars += sum(len(r) for r in refs)
    return counts


def never_learned(training_summary: dict) -> bool:
    """Whether a finished training (its ``train_summary.json``) scored a validation WER of 100% or more
    even at its best checkpoint: no better than a model that emits nothing.

    CTC training first learns to emit only blanks (the blank plateau: every word deleted) and leaves it
    after some hundreds of steps, later on harder data (tightly joined strings) and never when the learning
    rate has decayed first. A model exported from inside the plateau recognizes nothing, yet pruning, decoder
    tuning and timing would measure it as if it were a recognizer.
    """
    best = training_summary.get("best_val_wer")
    return best is not None and best >= 1.0
