"""Tests of greedy decoding, CTC prefix beam search, its search statistics and LM fusion."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from decoding import (
    BeamSearchConfig,
    CTCBeamSearchDecoder,
    KenLMLanguageModel,
    LanguageModel,
    aggregate_stats,
    greedy_decode,
    greedy_decode_with_timesteps,
    tokens_for_mass,
)


def _decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, **options):
    if lengths is None:
        lengths = torch.full((log_probs.shape[0],), log_probs.shape[1])
    return CTCBeamSearchDecoder(BeamSearchConfig(**options))(log_probs, lengths)


def _random(seed: int, batch: int, frames: int, vocab: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, vocab, generator=generator) * scale).log_softmax(-1)


def _peaky(
    seed: int, batch: int, frames: int, vocab: int, bump: float, labels: range | None = None
) -> torch.Tensor:
    """Noisy emissions with one boosted label per frame (blank 40 % of the time)."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels or range(vocab)
    logits = torch.randn(batch, frames, vocab, generator=generator)
    label = torch.randint(labels.start, labels.stop, (batch, frames), generator=generator)
    label = torch.where(torch.rand(batch, frames, generator=generator) < 0.4, torch.zeros_like(label), label)
    logits.scatter_add_(2, label[..., None], torch.full((batch, frames, 1), bump))
    return logits.log_softmax(-1)


def _frames(*rows: list[float]) -> torch.Tensor:
    """A batch of one utterance from per-frame probability rows."""
    return torch.tensor([rows], dtype=torch.float32).log()


def _exhaustive(log_probs: torch.Tensor, blank_id: int = 0) -> list[tuple[float, tuple[int, ...]]]:
    """Every label sequence with its exact CTC log-probability (sum over all V^T alignments), best first."""
    frames, vocab = log_probs.shape
    values = log_probs.double().tolist()
    totals: dict[tuple[int, ...], float] = defaultdict(lambda: -math.inf)
    for path in itertools.product(range(vocab), repeat=frames):
        labels = tuple(k for i, k in enumerate(path) if k != blank_id and (i == 0 or path[i - 1] != k))
        logp = sum(values[t][k] for t, k in enumerate(path))
        totals[labels] = float(np.logaddexp(totals[labels], logp))
    return sorted(((score, labels) for labels, score in totals.items()), reverse=True)


# --- greedy ---------------------------------------------------------------------------------------------


def test_greedy_collapses_repeats_drops_blanks_and_reports_start_frames():
    log_probs = _frames(
        [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]
    )
    assert greedy_decode(log_probs, torch.tensor([6])) == [[1, 1, 2]]
    assert greedy_decode_with_timesteps(log_probs, torch.tensor([6])) == [([1, 1, 2], [0, 3, 4])]
    assert greedy_decode(log_probs, torch.tensor([2])) == [[1]]
    assert greedy_decode(log_probs, torch.tensor([0])) == [[]]


def test_greedy_honours_blank_id():
    log_probs = _frames([0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1])
    assert greedy_decode_with_timesteps(log_probs, torch.tensor([4]), blank_id=2) == [([0, 0], [0, 3])]
    assert greedy_decode(log_probs, torch.tensor([4])) == [[2]]


# --- exactness against exhaustive search ----------------------------------------------------------------


@pytest.mark.parametrize("frames,vocab", [(1, 2), (3, 2), (4, 3), (5, 2), (5, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_equals_exhaustive_search(frames, vocab, seed):
    log_probs = _random(seed, 1, frames, vocab, scale=1.5)
    exact = _exhaustive(log_probs[0])
    nbest = min(5, len(exact))
    result = _decode(log_probs, beam_width=200, nbest=nbest)[0]
    assert [tuple(h.token_ids) for h in result.hypotheses] == [labels for _, labels in exact[:nbest]]
    for hypothesis, (score, _) in zip(result.hypotheses, exact, strict=False):
        assert hypothesis.score == pytest.approx(score, abs=1e-5)
        assert hypothesis.acoustic_score == hypothesis.score
        assert hypothesis.lm_score == 0.0


def test_nonzero_blank_id_equals_exhaustive_search():
    log_probs = _random(7, 1, 5, 3, scale=1.5)
    exact = _exhaustive(log_probs[0], blank_id=2)
    best = _decode(log_probs, beam_width=200, blank_id=2)[0].best
    assert tuple(best.token_ids) == exact[0][1]
    assert best.score == pytest.approx(exact[0][0], abs=1e-5)


def _textbook_prefix_beam_search(log_probs: torch.Tensor, beam_width: int) -> tuple[float, tuple[int, ...]]:
    """Straightforward prefix beam search over tuple prefixes (blank 0), as a reference under pruning."""
    beam = {(): (0.0, -math.inf)}
    for frame in log_probs.double().tolist():
        table: dict[tuple[int, ...], tuple[float, float]] = defaultdict(lambda: (-math.inf, -math.inf))

        def add(prefix, blank, label, table=table):
            old_blank, old_label = table[prefix]
            table[prefix] = (np.logaddexp(old_blank, blank), np.logaddexp(old_label, label))

        for prefix, (p_b, p_nb) in beam.items():
            p_total = np.logaddexp(p_b, p_nb)
            for token, logp in enumerate(frame):
                if token == 0:
                    add(prefix, p_total + logp, -math.inf)
                elif prefix and prefix[-1] == token:
                    add(prefix, -math.inf, p_nb + logp)
                    add((*prefix, token), -math.inf, p_b + logp)
                else:
                    add((*prefix, token), -math.inf, p_total + logp)
        best = sorted(table.items(), key=lambda item: np.logaddexp(*item[1]), reverse=True)[:beam_width]
        beam = dict(best)
    return max((float(np.logaddexp(*scores)), prefix) for prefix, scores in beam.items())


@pytest.mark.parametrize("beam_width", [1, 3, 8])
def test_pruned_search_equals_textbook_implementation(beam_width):
    log_probs = _random(13, 6, 30, 6, scale=3.0)
    results = _decode(log_probs, beam_width=beam_width)
    for result, utterance in zip(results, log_probs, strict=True):
        score, prefix = _textbook_prefix_beam_search(utterance, beam_width)
        assert tuple(result.best.token_ids) == prefix
        assert result.best.score == pytest.approx(score, abs=1e-6)


# --- agreement with greedy --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_beam_width_one_equals_greedy_on_peaky_emissions(seed):
    log_probs = _peaky(seed, batch=3, frames=40, vocab=8, bump=8.0)
    assert bool((log_probs.exp().max(-1).values > 0.5).all()), "emissions must be peaky for this identity"
    lengths = torch.tensor([40, 25, 0])
    results = _decode(log_probs, lengths, beam_width=1)
    expected = greedy_decode_with_timesteps(log_probs, lengths)
    assert [(r.best.token_ids, r.best.token_frames) for r in results] == expected


def test_cutoff_top_n_one_keeps_one_token_per_frame_and_follows_the_best_path():
    log_probs = _random(3, 2, 30, 6, scale=2.0)
    lengths = torch.tensor([30, 17])
    results = _decode(log_probs, lengths, beam_width=8, cutoff_top_n=1)
    assert [r.best.token_ids for r in results] == greedy_decode(log_probs, lengths)
    for result, length in zip(results, lengths.tolist(), strict=True):
        assert result.stats.tokens_kept.tolist() == [1] * length


# --- edge cases --------------------------------------------------------------------------------------------


def test_zero_length_and_all_blank_give_empty_hypotheses():
    log_probs = _frames([0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.95, 0.03, 0.02]).repeat(2, 1, 1)
    zero, blank = _decode(log_probs, torch.tensor([0, 3]), beam_width=4, nbest=2)
    assert zero.best.token_ids == [] and zero.best.score == 0.0 and len(zero.hypotheses) == 1
    assert zero.stats.frames == 0 and zero.stats.to_dict()["active_mean"] == 0.0
    assert blank.best.token_ids == []
    assert blank.best.acoustic_score == pytest.approx(math.log(0.9 * 0.8 * 0.95), abs=1e-6)
    assert len(blank.hypotheses) == 2


def test_repeats_collapse_unless_separated_by_blank():
    a, blank = [0.02, 0.96, 0.02], [0.96, 0.02, 0.02]
    assert _decode(_frames(a, blank, a), beam_width=8)[0].best.token_ids == [1, 1]
    assert _decode(_frames(a, a), beam_width=8)[0].best.token_ids == [1]
    best = _decode(_frames(a, a, blank, blank, a), beam_width=8)[0].best
    assert (best.token_ids, best.token_frames) == ([1, 1], [0, 4])


def test_padding_frames_are_ignored():
    log_probs = _random(5, 2, 20, 5, scale=2.0)
    padded = log_probs.clone()
    padded[0, 12:] = _random(6, 1, 8, 5, scale=5.0)[0]
    short = _decode(log_probs[:1, :12], beam_width=6, nbest=3)[0]
    masked = _decode(padded, torch.tensor([12, 20]), beam_width=6, nbest=3)[0]
    assert [(h.token_ids, h.score) for h in short.hypotheses] == [
        (h.token_ids, h.score) for h in masked.hypotheses
    ]


def test_nbest_is_sorted_and_distinct():
    result = _decode(_random(4, 1, 15, 5, scale=1.0), beam_width=10, nbest=10)[0]
    scores = [h.score for h in result.hypotheses]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert len({tuple(h.token_ids) for h in result.hypotheses}) == 10


# --- pruning knobs and statistics ---------------------------------------------------------------------------


def test_stats_are_consistent():
    log_probs = _random(8, 3, 40, 7, scale=1.5)
    lengths = torch.tensor([40, 31, 0])
    results = _decode(log_probs, lengths, beam_width=5, cutoff_top_n=4)
    for result, length in zip(results, lengths.tolist(), strict=True):
        stats = result.stats
        assert stats.frames == length == stats.frames_decoded + stats.frames_skipped
        assert all(arr.dtype.name == "int32" for arr in (stats.tokens_kept, stats.active, stats.extensions))
        assert (stats.active <= 5).all() and (stats.tokens_kept == 4).all()
        incoming = [1, *stats.active[:-1].tolist()]
        assert stats.extensions.tolist() == [n * 4 for n in incoming[:length]]
        assert (stats.candidates >= stats.active).all()
        assert stats.total_lm_queries == 0 and stats.wall_time_s > 0
        json.dumps(stats.to_dict(per_frame=True))
    total = aggregate_stats([r.stats for r in results])
    assert total["frames"] == 71 and total["utterances"] == 3
    assert total["extensions_total"] == sum(r.stats.total_extensions for r in results)
    assert total["active_max"] <= 5
    json.dumps(total)


def test_cutoff_prob_keeps_the_tokens_holding_that_mass():
    log_probs = _random(9, 1, 30, 12, scale=1.0)
    stats = _decode(log_probs, beam_width=4, cutoff_prob=0.8)[0].stats
    expected = tokens_for_mass(log_probs, torch.tensor([30]), 0.8)[0]
    assert stats.tokens_kept.tolist() == expected.tolist()
    capped = _decode(log_probs, beam_width=4, cutoff_prob=0.8, cutoff_top_n=3)[0].stats
    assert capped.tokens_kept.tolist() == expected.clamp(max=3).tolist()


def test_token_min_logp_drops_unlikely_tokens_but_keeps_the_best():
    log_probs = _random(10, 1, 30, 8, scale=3.0)
    stats = _decode(log_probs, beam_width=4, token_min_logp=-2.0)[0].stats
    expected = (log_probs[0] >= -2.0).sum(-1).clamp(min=1)
    assert stats.tokens_kept.tolist() == expected.tolist()
    assert (stats.tokens_kept < 8).any()


def test_beam_threshold_shrinks_the_active_set():
    log_probs = _peaky(11, 1, 60, 10, bump=5.0)
    wide = _decode(log_probs, beam_width=32)[0].stats
    off = _decode(log_probs, beam_width=32, beam_threshold=math.inf)[0].stats
    assert off.active.tolist() == wide.active.tolist()
    means = [
        _decode(log_probs, beam_width=32, beam_threshold=t)[0].stats.active.mean() for t in (1.0, 2.0, 3.0)
    ]
    assert means == sorted(means) and means[1] < 0.5 * wide.active.mean()


def test_blank_skip_skips_confident_blank_frames_and_keeps_repeats_apart():
    a, blank, sure_blank = [0.1, 0.85, 0.05], [0.6, 0.3, 0.1], [0.99, 0.005, 0.005]
    log_probs = _frames(a, sure_blank, a, blank, sure_blank, sure_blank, a)
    plain = _decode(log_probs, beam_width=8)[0]
    skipping = _decode(log_probs, beam_width=8, blank_skip_threshold=0.95)[0]
    assert skipping.stats.skipped.tolist() == [0, 1, 0, 0, 1, 1, 0]
    assert skipping.stats.frames_skipped == 3 and skipping.stats.frames_decoded == 4
    assert skipping.stats.tokens_kept[1] == 0 and skipping.stats.extensions[1] == 0
    assert skipping.best.token_ids == plain.best.token_ids == [1, 1, 1]
    assert skipping.best.score == pytest.approx(plain.best.score, abs=0.05)


@pytest.mark.parametrize(
    "option,value",
    [
        ("beam_width", 0),
        ("beam_width", 2.0),
        ("cutoff_top_n", 0),
        ("cutoff_prob", 0.0),
        ("cutoff_prob", 1.5),
        ("beam_threshold", -1.0),
        ("beam_threshold", math.nan),
        ("blank_skip_threshold", 0.0),
        ("blank_skip_threshold", 1.2),
        ("token_min_logp", 0.5),
        ("alpha", math.inf),
        ("beta", math.nan),
        ("nbest", 100),
        ("blank_id", -1),
        ("blank_id", True),
    ],
)
def test_config_rejects_bad_values_naming_the_option(option, value):
    with pytest.raises(ValueError, match=option):
        BeamSearchConfig(**{option: value})


def test_decoder_rejects_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        CTCBeamSearchDecoder(BeamSearchConfig(alpha=0.5))
    decoder = CTCBeamSearchDecoder()
    with pytest.raises(ValueError, match="log_probs"):
        decoder(torch.zeros(4, 3), torch.tensor([4]))
    with pytest.raises(ValueError, match="lengths"):
        decoder(torch.zeros(1, 4, 3), torch.tensor([5]))
    with pytest.raises(ValueError, match="blank_id"):
        CTCBeamSearchDecoder(BeamSearchConfig(blank_id=3))(torch.zeros(1, 4, 3), torch.tensor([4]))


# --- language model fusion -------------------------------------------------------------------------------

ARPA = """\\data\\
ngram 1=6
ngram 2=8

\\1-grams:
-2.0\t<unk>
-99\t<s>\t-0.5
-1.0\t</s>
-0.6\tone\t-0.3
-0.6\ttwo\t-0.3
-0.6\tthree\t-0.3

\\2-grams:
-0.1\t<s> one
-0.05\tone two
-2.5\tone three
-0.2\ttwo </s>
-0.2\tthree </s>
-0.1\ttwo one
-0.1\tthree one
-0.2\tone </s>

\\end\\
"""

PIECES = ["<blk>", "▁one", "▁t", "wo", "hree"]


@pytest.fixture
def kenlm_model(tmp_path: Path) -> KenLMLanguageModel:
    pytest.importorskip("kenlm")
    path = tmp_path / "digits.arpa"
    path.write_text(ARPA)
    return KenLMLanguageModel(path)


def _one_then_ambiguous(then_one: bool) -> torch.Tensor:
    """'▁one', '▁t', then a frame slightly favouring 'hree' (three) over 'wo' (two)."""
    blank = [0.96, 0.01, 0.01, 0.01, 0.01]
    rows = [[0.02, 0.95, 0.01, 0.01, 0.01], blank, [0.02, 0.01, 0.95, 0.01, 0.01], blank]
    rows += [[0.1, 0.0, 0.0, 0.4, 0.5], blank]
    if then_one:
        rows += [[0.02, 0.95, 0.01, 0.01, 0.01], blank]
    return _frames(*rows).clamp(min=-30.0)


@pytest.mark.parametrize("then_one", [False, True])
def test_word_lm_flips_an_ambiguous_word(kenlm_model, then_one):
    log_probs = _one_then_ambiguous(then_one)
    lengths = torch.tensor([log_probs.shape[1]])
    acoustic = CTCBeamSearchDecoder(BeamSearchConfig(beam_width=8), pieces=PIECES)(log_probs, lengths)[0]
    assert acoustic.best.token_ids[:3] == [1, 2, 4]
    decoder = CTCBeamSearchDecoder(BeamSearchConfig(beam_width=8, alpha=1.0, beta=0.5), kenlm_model, PIECES)
    fused = decoder(log_probs, lengths)[0]
    assert fused.best.token_ids[:3] == [1, 2, 3]
    assert len(fused.best.token_ids) == (4 if then_one else 3)
    assert fused.best.score == pytest.approx(fused.best.acoustic_score + fused.best.lm_score)
    assert fused.best.acoustic_score < acoustic.best.acoustic_score
    assert fused.stats.total_lm_queries == kenlm_model.queries > 0
    assert fused.stats.lm_queries_final >= 1


def test_word_lm_scores_match_kenlm(kenlm_model):
    log_probs = _one_then_ambiguous(then_one=False)
    decoder = CTCBeamSearchDecoder(BeamSearchConfig(beam_width=8, alpha=1.0, beta=0.0), kenlm_model, PIECES)
    best = decoder(log_probs, torch.tensor([log_probs.shape[1]]))[0].best
    log10 = -0.1 - 0.05 - 0.2  # <s> one, one two, two </s>
    assert best.lm_score == pytest.approx(log10 * math.log(10), abs=1e-4)


class _PreferB(LanguageModel):
    """Unit-level LM over pieces 'a'/'b' that strongly prefers 'b'; counts its queries."""

    def __init__(self) -> None:
        self.queries = 0

    @property
    def word_level(self) -> bool:
        return False

    def begin_state(self) -> tuple[str, ...]:
        return ()

    def score(self, state: tuple[str, ...], unit: str) -> tuple[float, tuple[str, ...]]:
        self.queries += 1
        return math.log(0.9 if unit == "b" else 0.1), (*state, unit)

    def end_score(self, state: tuple[str, ...]) -> float:
        self.queries += 1
        return 0.0


def test_unit_lm_is_queried_per_unit_and_flips_the_choice():
    log_probs = _frames([0.1, 0.5, 0.4], [0.9, 0.05, 0.05])
    lm = _PreferB()
    result = CTCBeamSearchDecoder(BeamSearchConfig(beam_width=4, alpha=1.0), lm, ["<blk>", "a", "b"])(
        log_probs, torch.tensor([2])
    )[0]
    assert _decode(log_probs, beam_width=4)[0].best.token_ids == [1]
    assert result.best.token_ids == [2]
    assert result.best.lm_score == pytest.approx(math.log(0.9))
    assert result.stats.lm_queries.tolist()[0] == 2 and result.stats.total_lm_queries == lm.queries


def test_lm_needs_pieces(kenlm_model):
    with pytest.raises(ValueError, match="pieces"):
        CTCBeamSearchDecoder(BeamSearchConfig(alpha=1.0), kenlm_model)
    with pytest.raises(ValueError, match="pieces"):
        CTCBeamSearchDecoder(BeamSearchConfig(alpha=1.0), kenlm_model, PIECES[:3])(
            torch.zeros(1, 2, 5), torch.tensor([2])
        )


# --- agreement with flashlight ----------------------------------------------------------------------------


def test_agrees_with_flashlight_lexicon_free_decoder():
    try:
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, OSError) as error:  # torchaudio without flashlight-text, or no torchaudio at all
        pytest.skip(f"torchaudio's flashlight CTC decoder is unavailable: {error}")
    vocab, frames, utterances = 10, 50, 100
    # "|" is flashlight's silence token; it is made impossible so both decoders search the same labels.
    tokens = ["<blk>", "|", *"abcdefgh"]
    flashlight = ctc_decoder(
        lexicon=None,
        tokens=tokens,
        lm=None,
        beam_size=16,
        beam_size_token=vocab,
        beam_threshold=50.0,
        log_add=True,
        blank_token="<blk>",
        sil_token="|",
    )
    log_probs = _peaky(12, utterances, frames, vocab, bump=5.0, labels=range(2, vocab))
    log_probs[..., 1] = -30.0
    log_probs = log_probs.log_softmax(-1).contiguous()
    lengths = torch.full((utterances,), frames)
    ours = _decode(log_probs, lengths, beam_width=16, cutoff_top_n=vocab, beam_threshold=50.0)
    theirs = flashlight(log_probs, lengths)
    agree = sum(
        r.best.token_ids == [t for t in h[0].tokens.tolist() if t != 1]
        for r, h in zip(ours, theirs, strict=True)
    )
    assert agree >= 98
