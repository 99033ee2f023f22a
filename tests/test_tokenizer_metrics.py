"""SentencePiece units with the blank at id 0, and jiwer-based error counts."""

from __future__ import annotations

import jiwer
import pytest

from asr.metrics import blank_plateau, error_counts, frequent_errors
from asr.tokenizer import BLANK_ID, Tokenizer, train_tokenizer
from common.errors import SpeechpruneError

TEXTS = ["one two three", "zero nine eight seven", "six five four", "one one two", "seven"] * 20


def test_char_tokenizer_round_trip_and_blank_convention(tmp_path):
    tokenizer = train_tokenizer(TEXTS, "char")
    assert tokenizer.blank_id == BLANK_ID == 0 and tokenizer.pieces[0] == "<blk>"
    ids = tokenizer.encode("  One TWO ")
    assert BLANK_ID not in ids
    assert tokenizer.decode(ids) == "one two"
    assert tokenizer.decode([0, *ids, 0]) == "one two"  # blanks vanish on decoding
    tokenizer.save(tmp_path / "units.model")
    reloaded = Tokenizer.load(tmp_path / "units.model")
    assert reloaded.pieces == tokenizer.pieces and reloaded.encode("nine") == tokenizer.encode("nine")


def test_unigram_tokenizer_learns_longer_units():
    tokenizer = train_tokenizer(TEXTS, "unigram", vocab_size=22)
    assert tokenizer.vocab_size == 22 and tokenizer.pieces[0] == "<blk>"
    assert len(tokenizer.encode("seven three")) < len("seven three")
    assert tokenizer.decode(tokenizer.encode("seven three")) == "seven three"


def test_tokenizer_errors_are_clear(tmp_path):
    with pytest.raises(SpeechpruneError, match="vocab_size"):
        train_tokenizer(TEXTS, "unigram")
    with pytest.raises(SpeechpruneError, match="failed"):
        train_tokenizer(TEXTS, "unigram", vocab_size=500)
    with pytest.raises(SpeechpruneError, match="no such tokenizer"):
        Tokenizer.load(tmp_path / "missing.model")


def test_error_counts_agree_with_jiwer_and_add_up():
    refs = ["one two three", "four five", "six"]
    hyps = ["one three", "four five six", ""]
    counts = error_counts(refs, hyps)
    assert counts.wer == pytest.approx(jiwer.wer(refs, hyps))
    assert counts.cer == pytest.approx(jiwer.cer(refs, hyps))
    first, second = error_counts(refs[:1], hyps[:1]), error_counts(refs[1:], hyps[1:])
    first += second
    assert (first.word_errors, first.words) == (counts.word_errors, counts.words)


def test_empty_reference_counts_insertions():
    counts = error_counts(["", "one"], ["two three", "one"])
    assert counts.word_errors == 2 and counts.words == 1
    assert (counts.substitutions, counts.deletions, counts.insertions) == (0, 0, 2)


def test_error_kinds_agree_with_jiwer_and_add_up():
    refs = ["eight one two", "one eight eight", "seven"]
    hyps = ["four one", "one eight eight three", "five"]
    output = jiwer.process_words(refs, hyps)
    counts = error_counts(refs, hyps)
    assert (counts.substitutions, counts.deletions, counts.insertions) == (
        output.substitutions, output.deletions, output.insertions,
    ) == (2, 1, 1)  # fmt: skip
    first = error_counts(refs[:1], hyps[:1])
    first += error_counts(refs[1:], hyps[1:])
    assert (first.substitutions, first.deletions, first.insertions) == (2, 1, 1)


def test_frequent_errors_rank_confusions_deletions_and_insertions():
    refs = ["eight one", "eight two", "two five one", "two", "", "nine"]
    hyps = ["four nine", "four zero", "zero five", "zero", "oh", "nine nine"]
    frequent = frequent_errors(refs, hyps, top=2)
    # word by word ("eight one" -> "four nine" is two confusions), most frequent first; top=2 drops
    # one->nine, the third pair
    assert frequent["substitutions"] == [
        {"reference": "two", "hypothesis": "zero", "count": 3},
        {"reference": "eight", "hypothesis": "four", "count": 2},
    ]
    assert frequent["deletions"] == [{"word": "one", "count": 1}]
    # an empty reference's words are insertions, as in error_counts
    assert sorted((e["word"], e["count"]) for e in frequent["insertions"]) == [("nine", 1), ("oh", 1)]
    assert frequent_errors(["one"], ["one"]) == {"substitutions": [], "deletions": [], "insertions": []}


def _val(substitutions: int, deletions: int, words: int = 80) -> dict[str, int]:
    return {"substitutions": substitutions, "deletions": deletions, "insertions": 0, "words": words}


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        ({"best_val_wer": 1.0}, "best validation WER 100%"),  # emits nothing at its best
        # most words deleted at 86% WER: barely off the plateau (a real leave-one-speaker-out control)
        ({"best_val_wer": 0.86, "exported_val_errors": _val(5, 60)}, "deletes 75% of the validation words"),
        ({"best_val_wer": 0.3, "exported_val_errors": _val(15, 9)}, None),  # learned; deletions a minority
        ({"best_val_wer": 0.86, "exported_val_errors": _val(60, 5)}, None),  # bad, but speaking: not blanks
        ({"best_val_wer": 0.4}, None),  # a summary written before exported_val_errors existed
    ],
)
def test_blank_plateau_names_both_signs(summary, reason):
    found = blank_plateau(summary)
    assert found is None if reason is None else reason in found
