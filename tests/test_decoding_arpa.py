"""Tests of the modified Kneser–Ney ARPA builder: a proper backoff model that KenLM and flashlight load."""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from asr.tokenizer import Tokenizer, train_tokenizer
from common.errors import SpeechpruneError
from decoding import BeamSearchConfig, CTCBeamSearchDecoder, KenLMLanguageModel, build_arpa
from decoding.arpa import FALLBACK_DISCOUNTS, estimate_discounts

kenlm = pytest.importorskip("kenlm")

DIGITS = "zero one two three four five six seven eight nine".split()
TOY = ["one two three", "one two", "two three one", "three", "one one two", "seven eight", "one two"]


def _digit_strings(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 5))) for _ in range(count)]


@pytest.fixture(scope="module")
def char_tokenizer() -> Tokenizer:
    return train_tokenizer(_digit_strings(200), "char")


def _state_after(model, history: list[str], sentence_start: bool):
    state = kenlm.State()
    (model.BeginSentenceWrite if sentence_start else model.NullContextWrite)(state)
    for word in history:
        following = kenlm.State()
        model.BaseScore(state, word, following)
        state = following
    return state


def _mass(model, state, vocab: list[str]) -> float:
    """Total probability of all predictable units (``</s>`` and ``<unk>`` included, ``<s>`` not)."""
    out = kenlm.State()
    return sum(10.0 ** model.BaseScore(state, word, out) for word in vocab)


def _assert_proper(path: Path, sentences: list[list[str]], checked: int | None = None) -> None:
    """For every history in the first ``checked`` sentences, from sentence start and from no context, the
    mass over the corpus vocabulary is 1."""
    model = kenlm.Model(str(path))
    vocab = sorted({unit for units in sentences for unit in units} | {"</s>", "<unk>"})
    for units in sentences[:checked]:
        for end in range(len(units) + 1):
            for sentence_start in (True, False):
                state = _state_after(model, units[:end], sentence_start)
                mass = _mass(model, state, vocab)
                assert mass == pytest.approx(1.0, abs=1e-4), (units[:end], sentence_start)


@pytest.mark.parametrize("order", [2, 3, 5])
def test_word_lm_sums_to_one_for_every_seen_context(tmp_path, order):
    summary = build_arpa(TOY, order, tmp_path / "toy.arpa", backend="own")
    assert summary.backend == "own" and summary.order == order and summary.path == tmp_path / "toy.arpa"
    _assert_proper(summary.path, [text.split() for text in TOY])
    assert [p.name for p in tmp_path.iterdir()] == ["toy.arpa"]


def test_piece_lm_sums_to_one_and_scores_like_kenlm_through_the_decoder_interface(tmp_path, char_tokenizer):
    texts = _digit_strings(60, seed=1)
    summary = build_arpa(texts, 4, tmp_path / "pieces.arpa", unit="piece", tokenizer=char_tokenizer)
    pieces = char_tokenizer.pieces
    sentences = [[pieces[i] for i in char_tokenizer.encode(text)] for text in texts]
    _assert_proper(summary.path, sentences, checked=10)

    lm = KenLMLanguageModel(summary.path, word_level=False)
    assert not lm.word_level and lm.order == 4
    state, total = lm.begin_state(), 0.0
    for unit in sentences[0]:
        logp, state = lm.score(state, unit)
        total += logp
    total += lm.end_score(state)
    expected = kenlm.Model(str(summary.path)).score(" ".join(sentences[0]), bos=True, eos=True)
    assert total == pytest.approx(expected * math.log(10), abs=1e-4)


def test_more_frequent_continuations_are_more_probable(tmp_path):
    texts = ["one two"] * 5 + ["one three"] * 2 + ["one four"] + ["two one"] * 3 + ["four"]
    model = kenlm.Model(str(build_arpa(texts, 2, tmp_path / "lm.arpa").path))
    after_one = _state_after(model, ["one"], sentence_start=True)
    out = kenlm.State()
    two, three, four = (model.BaseScore(after_one, word, out) for word in ("two", "three", "four"))
    assert two > three > four
    unseen = model.BaseScore(after_one, "one", out)
    assert four > unseen > model.BaseScore(after_one, "<unk>", out)


def test_tiny_corpus_falls_back_to_default_discounts_and_caps_the_order(tmp_path):
    summary = build_arpa(["seven"], 5, tmp_path / "tiny.arpa", backend="own")
    assert summary.order == 3 and summary.ngram_counts == (4, 2, 1)
    assert summary.fallback_orders == (1, 2, 3)
    _assert_proper(summary.path, [["seven"]])


def test_discounts_follow_chen_and_goodman():
    counts = [1] * 10 + [2] * 4 + [3] * 3 + [4] * 2 + [7]
    y = 10 / (10 + 2 * 4)
    expected = (1 - 2 * y * 4 / 10, 2 - 3 * y * 3 / 4, 3 - 4 * y * 2 / 3)
    assert estimate_discounts(counts) == pytest.approx(expected)
    assert estimate_discounts([1, 1, 2, 3]) is None  # no count of 4
    assert FALLBACK_DISCOUNTS == (0.5, 1.0, 1.5)


def test_words_are_normalized_like_transcripts(tmp_path):
    summary = build_arpa(["One  TWO", "one two"], 2, tmp_path / "lm.arpa")
    assert summary.ngram_counts == (5, 3)  # </s> <s> <unk> one two; <s> one, one two, two </s>


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"order": 1}, "order"),
        ({"unit": "char"}, "unit"),
        ({"unit": "piece"}, "tokenizer"),
        ({"backend": "srilm"}, "backend"),
        ({"texts": ["", "  "]}, "transcripts"),
        ({"texts": ["one </s> two"]}, "reserved"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    arguments = {"texts": TOY, "order": 2, "out_path": tmp_path / "lm.arpa", **kwargs}
    with pytest.raises(SpeechpruneError, match=match):
        build_arpa(**arguments)
    assert not (tmp_path / "lm.arpa").exists()


def test_backend_choice_depends_on_lmplz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert build_arpa(TOY, 2, tmp_path / "auto.arpa").backend == "own"
    with pytest.raises(SpeechpruneError, match="lmplz"):
        build_arpa(TOY, 2, tmp_path / "lmplz.arpa", backend="lmplz")


@pytest.mark.skipif(shutil.which("lmplz") is None, reason="KenLM's lmplz is not on PATH")
def test_lmplz_backend_builds_a_proper_model(tmp_path):
    summary = build_arpa(TOY, 3, tmp_path / "lmplz.arpa", backend="lmplz")
    assert summary.backend == "lmplz"
    _assert_proper(summary.path, [text.split() for text in TOY])


# --- flashlight (torchaudio) loads the models --------------------------------------------------------------


@pytest.fixture(scope="module")
def ctc_decoder():
    try:
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, OSError) as error:
        pytest.skip(f"torchaudio's flashlight CTC decoder is unavailable: {error}")
    return ctc_decoder


# Acoustics favour A by one frame (0.6 against 0.4 for B's piece); the LMs below know only B, so the LM
# weight decides: A at weight 0, B once the weight is large enough.
SPOKEN, LM_ONLY = "seven nine two", "seven none two"
AMBIGUOUS_ODDS = 0.6


def _ambiguous(pieces: list[str], a_ids: list[int], b_ids: list[int]) -> torch.Tensor:
    """(1, frames, vocab) emissions whose best path spells ``a_ids``: shared pieces hold two peaky frames,
    the one piece where the spellings differ a single frame with probability 0.6 for A's and 0.4 for B's;
    every piece is followed by a blank frame."""
    assert len(a_ids) == len(b_ids) and sum(a != b for a, b in zip(a_ids, b_ids, strict=True)) == 1
    rows: list[dict[int, float]] = []
    for a, b in zip(a_ids, b_ids, strict=True):
        if a == b:
            rows += [{a: 0.0}, {a: 0.0}]
        else:
            rows.append({a: math.log(AMBIGUOUS_ODDS), b: math.log(1 - AMBIGUOUS_ODDS)})
        rows.append({0: 0.0})
    log_probs = torch.full((len(rows), len(pieces)), -10.0)
    for frame, row in enumerate(rows):
        for token, logp in row.items():
            log_probs[frame, token] = logp
    return log_probs.log_softmax(-1)[None].contiguous()


def _lm_texts() -> list[str]:
    """Digit strings in which every "nine" became "none": the LM has seen B's word, never A's."""
    texts = [text.replace("nine", "none") for text in _digit_strings(200, seed=5)]
    assert not any("nine" in text for text in texts) and sum("none" in text for text in texts) > 20
    return texts + [LM_ONLY]


def test_piece_lm_decides_the_own_decoders_choice_by_its_weight(tmp_path, char_tokenizer):
    pieces = char_tokenizer.pieces
    lm = KenLMLanguageModel(
        build_arpa(_lm_texts(), 4, tmp_path / "p.arpa", unit="piece", tokenizer=char_tokenizer).path,
        word_level=False,
    )
    a_ids, b_ids = char_tokenizer.encode(SPOKEN), char_tokenizer.encode(LM_ONLY)
    emissions = _ambiguous(pieces, a_ids, b_ids)
    lengths = torch.tensor([emissions.shape[1]])

    def best(alpha: float) -> list[int]:
        config = BeamSearchConfig(beam_width=8, cutoff_top_n=len(pieces), alpha=alpha)
        return CTCBeamSearchDecoder(config, lm, pieces)(emissions, lengths)[0].best.token_ids

    assert best(0.0) == a_ids
    assert best(1.0) == b_ids
    assert lm.queries > 0


def _flashlight_piece_decoder(ctc_decoder, pieces, lm_path: Path, lm_dict: Path, lm_weight: float):
    return ctc_decoder(
        lexicon=None,
        tokens=pieces,
        lm=str(lm_path),
        lm_dict=str(lm_dict),
        lm_weight=lm_weight,
        beam_size=8,
        log_add=True,
        blank_token="<blk>",
        sil_token="<blk>",
    )


def test_piece_lm_loads_in_flashlight_lexicon_free_and_its_weight_decides(
    tmp_path, char_tokenizer, ctc_decoder
):
    pieces = char_tokenizer.pieces
    lm = build_arpa(_lm_texts(), 4, tmp_path / "pieces.arpa", unit="piece", tokenizer=char_tokenizer)
    lm_dict = tmp_path / "tokens.txt"
    lm_dict.write_text("".join(piece + "\n" for piece in pieces), encoding="utf-8")
    a_ids, b_ids = char_tokenizer.encode(SPOKEN), char_tokenizer.encode(LM_ONLY)
    emissions = _ambiguous(pieces, a_ids, b_ids)
    for lm_weight, expected in ((0.0, a_ids), (2.0, b_ids)):
        decoder = _flashlight_piece_decoder(ctc_decoder, pieces, lm.path, lm_dict, lm_weight)
        assert decoder(emissions, None)[0][0].tokens.tolist() == expected, lm_weight


def test_word_lm_loads_in_flashlight_with_a_lexicon_and_its_weight_decides(
    tmp_path, char_tokenizer, ctc_decoder
):
    pieces = char_tokenizer.pieces
    lm = build_arpa(_lm_texts(), 3, tmp_path / "words.arpa")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("".join(f"{word}\t{' '.join(word)}\n" for word in [*DIGITS, "none"]), encoding="utf-8")
    emissions = _ambiguous(pieces, char_tokenizer.encode(SPOKEN), char_tokenizer.encode(LM_ONLY))
    for lm_weight, expected in ((0.0, SPOKEN), (2.0, LM_ONLY)):
        decoder = ctc_decoder(
            lexicon=str(lexicon),
            tokens=pieces,
            lm=str(lm.path),
            lm_weight=lm_weight,
            word_score=0.0,
            beam_size=8,
            log_add=True,
            blank_token="<blk>",
            sil_token="▁",
        )
        assert decoder(emissions, None)[0][0].words == expected.split(), lm_weight
