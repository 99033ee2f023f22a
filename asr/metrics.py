"""Word and character error counts through jiwer, kept as counts so they add up across batches and ranks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import jiwer


@dataclass
class ErrorCounts:
    """Edit operations against reference length; WER = errors / reference words.

    Word errors are kept by kind because the kinds have different causes on a new voice: substitutions
    are acoustic confusions ("eight" read as "four"), deletions inside strings are words merged into a
    neighbour by coarticulation, insertions are noise or a split word.
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0

    def __iadd__(self, other: ErrorCounts) -> ErrorCounts:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.words += other.words
        self.char_errors += other.char_errors
        self.chars += other.chars
        return self

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)

    @property
    def deleted(self) -> float:
        """The fraction of reference words deleted: near 1 on CTC's blank plateau."""
        return self.deletions / max(self.words, 1)


def _split_empty(references: list[str], hypotheses: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(references, hypotheses) of the pairs jiwer can align, and the hypotheses of empty references
    (jiwer refuses those, but a silent test file is a legitimate input: its words are all insertions)."""
    refs, hyps, unreferenced = [], [], []
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        if reference.strip():
            refs.append(reference)
            hyps.append(hypothesis)
        else:
            unreferenced.append(hypothesis)
    return refs, hyps, unreferenced


def error_counts(references: list[str], hypotheses: list[str]) -> ErrorCounts:
    """Counts for aligned reference/hypothesis lists. Empty references count every hypothesis word as an
    insertion."""
    counts = ErrorCounts()
    refs, hyps, unreferenced = _split_empty(references, hypotheses)
    for hypothesis in unreferenced:
        counts.insertions += len(hypothesis.split())
        counts.char_errors += len(hypothesis.replace(" ", ""))
    if refs:
        words = jiwer.process_words(refs, hyps)
        chars = jiwer.process_characters(refs, hyps)
        counts.substitutions += words.substitutions
        counts.deletions += words.deletions
        counts.insertions += words.insertions
        counts.words += sum(len(r.split()) for r in refs)
        counts.char_errors += chars.substitutions + chars.deletions + chars.insertions
        counts.chars += sum(len(r) for r in refs)
    return counts


def frequent_errors(references: list[str], hypotheses: list[str], top: int = 10) -> dict[str, list]:
    """The most frequent word substitutions (reference -> hypothesis), deletions and insertions, most
    frequent first: what a WER figure hides and what a lever has to fix (which words a new voice confuses,
    which ones vanish inside strings). Empty references count their hypothesis words as insertions, as in
    :func:`error_counts`."""
    substituted: Counter[tuple[str, str]] = Counter()
    inserted: Counter[str] = Counter()
    deleted: Counter[str] = Counter()
    refs, hyps, unreferenced = _split_empty(references, hypotheses)
    for hypothesis in unreferenced:
        inserted.update(hypothesis.split())
    if refs:
        output = jiwer.process_words(refs, hyps)
        # word by word from jiwer's alignment (its collect_error_counts tallies whole chunks, so "eight
        # one" -> "four nine" would hide eight -> four)
        for chunks, ref, hyp in zip(output.alignments, output.references, output.hypotheses, strict=True):
            for chunk in chunks:
                ref_words = ref[chunk.ref_start_idx : chunk.ref_end_idx]
                hyp_words = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
                if chunk.type == "substitute":
                    substituted.update(zip(ref_words, hyp_words, strict=True))
                elif chunk.type == "delete":
                    deleted.update(ref_words)
                elif chunk.type == "insert":
                    inserted.update(hyp_words)
    return {
        "substitutions": [
            {"reference": ref, "hypothesis": hyp, "count": n}
            for (ref, hyp), n in substituted.most_common(top)
        ],
        "deletions": [{"word": word, "count": n} for word, n in deleted.most_common(top)],
        "insertions": [{"word": word, "count": n} for word, n in inserted.most_common(top)],
    }


# a model whose output drops more than this fraction of the words still mostly emits blanks
MOSTLY_DELETED = 0.5


def blank_plateau(training_summary: dict) -> str | None:
    """Why a finished training (its ``train_summary.json``) is still on CTC's blank plateau, or None.

    CTC training first learns to emit only blanks (the blank plateau: every word deleted) and leaves it
    after some hundreds of steps, later on harder data (tightly joined strings) and never when the learning
    rate has decayed first. A model exported from inside the plateau recognizes nothing, yet pruning, decoder
    tuning and timing would measure it as if it were a recognizer. Two signs: even the best checkpoint's
    validation WER is 100% or more (no better than emitting nothing), or the exported model still deletes
    most validation words (a leave-one-speaker-out fold that ended at 86% validation WER, 75% of its
    held-out words deleted, read as a speaker's figure until this was checked).
    """
    best = training_summary.get("best_val_wer")
    if best is not None and best >= 1.0:
        return f"best validation WER {100 * best:.0f}%: no better than emitting nothing"
    errors = training_summary.get("exported_val_errors")  # absent from summaries written before it was
    deleted = ErrorCounts(**errors).deleted if errors else 0.0
    if deleted > MOSTLY_DELETED:
        return (
            f"the exported model deletes {100 * deleted:.0f}% of the validation words: it emits mostly blanks"
        )
    return None
