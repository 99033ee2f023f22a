"""Tests of the common decoder interface: own, flashlight, pyctcdecode and ctcdecode on the same emissions."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from pathlib import Path

import pytest
import torch

from asr.tokenizer import Tokenizer, train_tokenizer
from common.errors import SpeechpruneError
from decoding import (
    BackendResult,
    DecoderSettings,
    available_backends,
    build_arpa,
    make_decoder,
    write_lexicon,
)
from decoding.backends import PyCTCDecodeBackend
from decoding.paths import collapse_path, pieces_to_text

DIGITS = "zero one two three four five six seven eight nine".split()
UTTERANCES = 60


def _digit_strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 4))) for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The digits recipe's character tokenizer: "▁" is a piece of its own."""
    return train_tokenizer(_digit_strings(200, seed=0), "char")


@pytest.fixture(scope="module")
def peaky(tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Noisy emissions whose most probable path spells digit words: (log_probs, lengths, texts).

    Each piece of the transcript holds 1-2 frames, with 0-2 blank frames between pieces (at least one
    between equal pieces, as CTC requires).
    """
    rng = random.Random(1)
    texts = _digit_strings(UTTERANCES, seed=2)
    paths = []
    for text in texts:
        path: list[int] = []
        for token in tokenizer.encode(text):
            blanks = rng.randint(1 if path and path[-1] == token else 0, 2)
            path += [0] * blanks + [token] * rng.randint(1, 2)
        paths.append(path + [0] * rng.randint(0, 2))
    frames = max(len(path) for path in paths)
    logits = torch.randn(
        len(paths), frames, len(tokenizer.pieces), generator=torch.Generator().manual_seed(3)
    )
    for i, path in enumerate(paths):
        logits[i, torch.arange(len(path)), torch.tensor(path)] += 8.0
    return logits.log_softmax(-1), torch.tensor([len(path) for path in paths]), texts


def _matched(tokenizer: Tokenizer, **extra) -> DecoderSettings:
    """Settings every backend honours: no top-n cutoff (all pieces), no threshold, no skipping."""
    return DecoderSettings(beam_width=16, cutoff_top_n=len(tokenizer.pieces), **extra)


def _texts(results: list[BackendResult]) -> list[str]:
    return [result.text for result in results]


def _agreement(results: list[BackendResult], reference: list[str]) -> int:
    return sum(result.text == text for result, text in zip(results, reference, strict=True))


@pytest.fixture(scope="module")
def own_results(tokenizer, peaky) -> list[BackendResult]:
    log_probs, lengths, _ = peaky
    return make_decoder("own", tokenizer, _matched(tokenizer))(log_probs, lengths)


def test_own_decoder_reads_the_words_and_reports_stats(own_results, peaky):
    log_probs, lengths, texts = peaky
    assert bool((log_probs.exp().max(-1).values[0, : lengths[0]] > 0.9).all()), "emissions must be peaky"
    assert _texts(own_results) == texts
    for result, length in zip(own_results, lengths.tolist(), strict=True):
        assert result.stats is not None and result.stats.frames == length
        assert 0 < result.wall_time_s and result.stats.wall_time_s <= result.wall_time_s
        assert len(result.token_ids) == len(result.token_frames)


@pytest.mark.parametrize("name", ["flashlight", "pyctcdecode"])
def test_backends_agree_with_the_own_decoder_without_lm(name, tokenizer, peaky, own_results):
    if name not in available_backends():
        pytest.skip(f"{name} is not importable here")
    log_probs, lengths, texts = peaky
    results = make_decoder(name, tokenizer, _matched(tokenizer))(log_probs, lengths)
    assert len(results) == UTTERANCES
    assert _agreement(results, _texts(own_results)) >= 0.98 * UTTERANCES
    assert _agreement(results, texts) >= 0.98 * UTTERANCES
    assert all(result.stats is None and result.wall_time_s > 0 for result in results)
    scores = [abs(ours.score - theirs.score) for ours, theirs in zip(own_results, results, strict=True)]
    assert statistics.median(scores) < 0.05  # both sum the alignments of the best prefix
    if name == "flashlight":  # exact token ids and start frames, not just text
        same = sum(
            (ours.token_ids, ours.token_frames) == (theirs.token_ids, theirs.token_frames)
            for ours, theirs in zip(own_results, results, strict=True)
        )
        assert same >= 0.98 * UTTERANCES
    else:
        assert all(result.token_ids is None and result.token_frames is None for result in results)


def test_ctcdecode_agrees_with_the_own_decoder(tokenizer, peaky, own_results):
    pytest.importorskip(
        "ctcdecode", reason="ctcdecode is not importable: it must be built from source (Boost/OpenFST)"
    )
    log_probs, lengths, _ = peaky
    results = make_decoder("ctcdecode", tokenizer, _matched(tokenizer))(log_probs, lengths)
    assert _agreement(results, _texts(own_results)) >= 0.98 * UTTERANCES


@pytest.mark.parametrize("name", ["own", "flashlight", "pyctcdecode"])
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # pyctcdecode
def test_zero_length_and_padded_utterances(name, tokenizer, peaky):
    if name not in available_backends():
        pytest.skip(f"{name} is not importable here")
    log_probs, lengths, texts = peaky
    decoder = make_decoder(name, tokenizer.pieces, _matched(tokenizer))
    padded = log_probs[:2].clone()
    padded[0, lengths[0] :] = log_probs[1, : padded.shape[1] - lengths[0]]
    empty, full = decoder(padded, torch.tensor([0, int(lengths[1])]))
    assert empty.text == "" and empty.token_ids in ([], None)
    assert full.text == texts[1]
    assert decoder(padded[:1], lengths[:1])[0].text == texts[0]


# --- language models --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_files(tokenizer, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lm")
    corpus = _digit_strings(300, seed=4)
    return {
        "word": build_arpa(corpus, 3, folder / "words.arpa").path,
        "piece": build_arpa(corpus, 6, folder / "pieces.arpa", unit="piece", tokenizer=tokenizer).path,
        "lexicon": write_lexicon(folder / "lexicon.txt", DIGITS, tokenizer),
    }


def test_flashlight_piece_lm_weight_matches_the_own_alpha(tokenizer, peaky, lm_files):
    """flashlight weights log10 LM scores: alpha * ln 10 makes its fused scores equal the own decoder's."""
    log_probs, lengths, texts = peaky
    settings = _matched(tokenizer, alpha=0.8, lm_path=lm_files["piece"], lm_unit="piece")
    ours = make_decoder("own", tokenizer, settings)(log_probs[:20], lengths[:20])
    theirs = make_decoder("flashlight", tokenizer, settings)(log_probs[:20], lengths[:20])
    assert _texts(ours) == _texts(theirs) == texts[:20]
    assert statistics.median(abs(a.score - b.score) for a, b in zip(ours, theirs, strict=True)) < 0.05
    assert all(result.stats.total_lm_queries > 0 for result in ours)


def test_word_lm_runs_in_own_flashlight_lexicon_and_pyctcdecode(tokenizer, peaky, lm_files):
    log_probs, lengths, texts = peaky
    word_lm = _matched(tokenizer, alpha=0.5, beta=1.0, lm_path=lm_files["word"])
    runs = {"own": word_lm, "flashlight": dataclasses.replace(word_lm, lexicon_path=lm_files["lexicon"])}
    if "pyctcdecode" in available_backends():
        runs["pyctcdecode"] = word_lm
    for name, settings in runs.items():
        results = make_decoder(name, tokenizer, settings)(log_probs[:20], lengths[:20])
        assert all(result.text for result in results), name
        assert _agreement(results, texts[:20]) >= 19, name
        assert all(set(result.text.split()) <= set(DIGITS) for result in results), name


# Acoustics favour A by one frame (0.6 against 0.4 for B's piece); the LMs know only B, so the LM weight
# decides: A at alpha 0, B once alpha is large enough. An LM that loads but is not applied, or is applied
# with the wrong weight, fails these.
SPOKEN, LM_ONLY = "seven nine two", "seven none two"


def _ambiguous(tokenizer: Tokenizer, spoken: str = SPOKEN, alternative: str = LM_ONLY, odds: float = 0.6):
    """(1, frames, vocab) emissions and lengths whose best path spells ``spoken``: shared pieces hold two
    peaky frames, the one differing piece a single frame with ``odds`` for ``spoken``'s piece and
    1 - ``odds`` for ``alternative``'s; each piece is followed by a blank frame."""
    a_ids, b_ids = tokenizer.encode(spoken), tokenizer.encode(alternative)
    assert len(a_ids) == len(b_ids) and sum(a != b for a, b in zip(a_ids, b_ids, strict=True)) == 1
    rows: list[dict[int, float]] = []
    for a, b in zip(a_ids, b_ids, strict=True):
        rows += [{a: 0.0}, {a: 0.0}] if a == b else [{a: math.log(odds), b: math.log(1 - odds)}]
        rows.append({0: 0.0})
    log_probs = torch.full((len(rows), len(tokenizer.pieces)), -10.0)
    for frame, row in enumerate(rows):
        for token, logp in row.items():
            log_probs[frame, token] = logp
    return log_probs.log_softmax(-1)[None], torch.tensor([len(rows)])


@pytest.fixture(scope="module")
def b_only_lms(tokenizer, tmp_path_factory) -> dict[str, Path]:
    """LMs of digit strings in which every "nine" became "none", and a lexicon that holds both words."""
    folder = tmp_path_factory.mktemp("b_only_lm")
    texts = [text.replace("nine", "none") for text in _digit_strings(300, seed=4)] + [LM_ONLY]
    assert not any("nine" in text for text in texts) and sum("none" in text for text in texts) > 20
    return {
        "word": build_arpa(texts, 3, folder / "words.arpa").path,
        "piece": build_arpa(texts, 6, folder / "pieces.arpa", unit="piece", tokenizer=tokenizer).path,
        "lexicon": write_lexicon(folder / "lexicon.txt", [*DIGITS, "none"], tokenizer),
    }


def _lm_settings(tokenizer: Tokenizer, lms: dict[str, Path], name: str, unit: str, alpha: float):
    lexicon = lms["lexicon"] if name == "flashlight" and unit == "word" else None
    return _matched(tokenizer, alpha=alpha, lm_path=lms[unit], lm_unit=unit, lexicon_path=lexicon)


@pytest.mark.parametrize(
    "name,unit",
    [
        ("own", "piece"),
        ("own", "word"),
        ("flashlight", "piece"),
        ("flashlight", "word"),
        ("pyctcdecode", "word"),
    ],
)
def test_lm_weight_flips_the_choice_between_the_acoustic_and_the_lm_favourite(
    name, unit, tokenizer, b_only_lms
):
    if name not in available_backends():
        pytest.skip(f"{name} is not importable here")
    log_probs, lengths = _ambiguous(tokenizer)

    def text(alpha: float) -> str:
        decoder = make_decoder(name, tokenizer, _lm_settings(tokenizer, b_only_lms, name, unit, alpha))
        return decoder(log_probs, lengths)[0].text

    assert text(0.0) == SPOKEN
    assert text(1.0) == LM_ONLY


def test_flashlight_flips_at_the_own_decoders_alpha(tokenizer, b_only_lms):
    """The alpha at which the piece LM overturns the acoustics is the same for both backends: flashlight's
    lm_weight is alpha * ln 10. Without the ln 10 it would still read A at 1.25 x the own crossing."""
    log_probs, lengths = _ambiguous(tokenizer, odds=0.9)

    def text(name: str, alpha: float) -> str:
        settings = _lm_settings(tokenizer, b_only_lms, name, "piece", alpha)
        return make_decoder(name, tokenizer, settings)(log_probs, lengths)[0].text

    low, high = 0.0, 4.0
    assert text("own", low) == SPOKEN and text("own", high) == LM_ONLY
    for _ in range(12):  # bisect the own decoder's crossing
        middle = (low + high) / 2
        low, high = (middle, high) if text("own", middle) == SPOKEN else (low, middle)
    crossing = (low + high) / 2
    assert 0.05 < crossing < 2.0, crossing
    assert text("flashlight", 0.8 * crossing) == SPOKEN
    assert text("flashlight", 1.25 * crossing) == LM_ONLY


def test_write_lexicon_spells_words_without_the_leading_silence(tokenizer, lm_files):
    lines = lm_files["lexicon"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10 and "seven\ts e v e n" in lines


# --- errors --------------------------------------------------------------------------------------------


def test_unknown_backend_is_named(tokenizer):
    with pytest.raises(SpeechpruneError, match="'kaldi'.*own, flashlight, ctcdecode, pyctcdecode"):
        make_decoder("kaldi", tokenizer)


def test_unavailable_backend_is_named_with_how_to_get_it(tokenizer, monkeypatch):
    def missing():
        raise ImportError("No module named 'pyctcdecode'")

    monkeypatch.setattr(PyCTCDecodeBackend, "_library", staticmethod(missing))
    assert "pyctcdecode" not in available_backends() and available_backends()[:2] == ["greedy", "own"]
    with pytest.raises(SpeechpruneError, match=r"'pyctcdecode' is unavailable.*pip install pyctcdecode"):
        make_decoder("pyctcdecode", tokenizer)


def test_ctcdecode_unavailable_says_it_must_be_built(tokenizer):
    if "ctcdecode" in available_backends():
        pytest.skip("ctcdecode is importable here")
    with pytest.raises(SpeechpruneError, match="'ctcdecode' is unavailable.*build it from source"):
        make_decoder("ctcdecode", tokenizer)


@pytest.mark.parametrize(
    "name,settings,match",
    [
        ("flashlight", {"cutoff_prob": 0.9}, "cutoff_prob=0.9"),
        ("flashlight", {"token_min_logp": -5.0}, "token_min_logp"),
        ("flashlight", {"blank_skip_threshold": 0.99}, "blank_skip_threshold"),
        ("pyctcdecode", {"cutoff_top_n": 5}, "cutoff_top_n=5.*vocabulary size 18"),
        ("own", {"lexicon": True}, "lexicon_path"),
        ("flashlight", {"lm": "piece", "beta": 0.5}, "beta"),
        ("flashlight", {"lm": "word", "alpha": 0.5}, "piece-level LM"),
        ("pyctcdecode", {"lm": "piece", "alpha": 0.5}, "word LMs only"),
        ("greedy", {"temperature": 0.5}, "temperature=0.5"),
    ],
)
def test_settings_a_backend_cannot_honour_are_refused(name, settings, match, tokenizer, lm_files):
    if name not in available_backends():
        pytest.skip(f"{name} is not importable here")
    fields = dict(settings)
    if fields.pop("lexicon", False):
        fields["lexicon_path"] = lm_files["lexicon"]
    unit = fields.pop("lm", None)
    if unit is not None:
        fields.update(lm_path=lm_files[unit], lm_unit=unit)
    with pytest.raises(SpeechpruneError, match=match):
        make_decoder(name, tokenizer, DecoderSettings(**fields))


def test_settings_validate_lm_fields(tmp_path):
    with pytest.raises(ValueError, match="alpha and beta"):
        DecoderSettings(alpha=0.5)
    with pytest.raises(ValueError, match="lm_unit"):
        DecoderSettings(lm_unit="char")
    with pytest.raises(ValueError, match="lexicon"):
        DecoderSettings(lm_path="lm.arpa", lm_unit="piece", lexicon_path="lexicon.txt")
    with pytest.raises(ValueError, match="beam_width"):
        DecoderSettings(beam_width=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            DecoderSettings(temperature=bad)
    settings = DecoderSettings(lm_path=str(tmp_path / "missing.arpa"), alpha=0.5)
    assert settings.lm_path == tmp_path / "missing.arpa"
    with pytest.raises(SpeechpruneError, match="missing.arpa: no such language model"):
        make_decoder("own", ["<blk>", "a"], settings)


def test_text_and_path_helpers():
    pieces = ["<blk>", "<unk>", "▁", "a", "b"]
    assert pieces_to_text(pieces, [2, 3, 4, 2, 2, 4, 1, 3]) == "ab b ⁇ a"
    assert collapse_path([0, 3, 3, 0, 3, 4, 4, 0], blank_id=0) == ([3, 3, 4], [1, 4, 5])


def test_sharpening_keeps_each_frames_ranking_and_shrinks_the_search(tokenizer, peaky):
    from decoding.backends import sharpen

    log_probs, lengths, texts = peaky
    flat = (log_probs / 2.0).log_softmax(-1).numpy()  # a pruned model's flatter outputs
    sharp = sharpen(flat, 0.5)
    assert (sharp.argmax(-1) == flat.argmax(-1)).all()
    assert abs(float(torch.from_numpy(sharp).exp().sum(-1).mean()) - 1.0) < 1e-5
    assert sharp.max(-1).mean() > flat.max(-1).mean()  # the best token got surer
    base = _matched(tokenizer, beam_threshold=3.0)

    def extensions(settings: DecoderSettings) -> int:
        results = make_decoder("own", tokenizer, settings)(flat, lengths)
        return sum(int(result.stats.extensions.sum()) for result in results)

    assert extensions(dataclasses.replace(base, temperature=0.5)) < 0.5 * extensions(base)
    sharpened = make_decoder("flashlight", tokenizer, dataclasses.replace(base, temperature=0.5))
    assert _texts(sharpened(flat, lengths)) == _texts(
        make_decoder("flashlight", tokenizer, base)(sharp, lengths)
    )
