"""CTC prefix beam search with shallow LM fusion that reports the size of the space it searched.

Each prefix carries two acoustic log-probabilities: of the alignments ending in blank (``p_b``) and of
those ending in its last token (``p_nb``). The split is what lets "a <blank> a" decode to "a a" while
"a a" collapses to "a": a repeated token may only start a new label from ``p_b``.

The per-frame work is two small functions over plain Python dicts and floats, ``_extend`` and ``_prune``,
with the cutoffs precomputed by :mod:`decoding.token_cutoffs`; they are the part to move to compiled code.
Every decode returns :class:`~decoding.search_stats.SearchStats` with its per-frame work, because pruning
the encoder is paid for here, in the search, and that cost is a result in its own right.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from decoding._inputs import as_array, check_blank_id, check_emissions
from decoding.lm import LanguageModel
from decoding.prefix_trie import ROOT, PrefixTrie
from decoding.search_stats import PER_FRAME_FIELDS, SearchStats
from decoding.token_cutoffs import FramePlan, plan_frames

NEG_INF = float("-inf")


class PrefixTable(NamedTuple):
    """Acoustic log-probabilities of a set of prefixes, keyed alike in both dicts.

    ``blank[k]`` is the log-probability of the alignments of prefix ``k`` ending in blank, ``label[k]``
    of those ending in its last token. Two dicts of floats rather than one dict of pairs, because dicts
    holding only ints and floats are not tracked by Python's garbage collector, whose collections would
    otherwise grow with the number of candidates per frame and dominate wide beams.
    """

    blank: dict[int, float]
    label: dict[int, float]


def logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats, exact for -inf operands."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    """Raise the ValueError that names the offending option."""
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class BeamSearchConfig:
    """Search options, named and defined like the decoders users know.

    Attributes:
        beam_width: hypotheses (distinct prefixes) kept after each frame.
        cutoff_top_n: at most this many most-probable tokens are tried per frame (ctcdecode).
        cutoff_prob: per frame, tokens are tried until their cumulative probability reaches this
            (ctcdecode); 1.0 leaves only ``cutoff_top_n``.
        beam_threshold: drop hypotheses scoring below best - threshold (flashlight); None or inf = off.
        blank_skip_threshold: skip frames whose blank probability exceeds this (WeNet); None = off.
        token_min_logp: tokens with a lower log-probability are not tried, except the best one
            (pyctcdecode); None = off.
        alpha: weight of the LM's natural-log probability in the score.
        beta: bonus per word (word-level LM) or per unit (unit-level LM).
        nbest: hypotheses returned per utterance, best first (fewer if fewer prefixes survive);
            at most ``beam_width``.
        blank_id: index of the CTC blank.
    """

    beam_width: int = 16
    cutoff_top_n: int = 40
    cutoff_prob: float = 1.0
    beam_threshold: float | None = None
    blank_skip_threshold: float | None = None
    token_min_logp: float | None = None
    alpha: float = 0.0
    beta: float = 0.0
    nbest: int = 1
    blank_id: int = 0

    def __post_init__(self) -> None:
        for name in ("beam_width", "cutoff_top_n", "nbest"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, name, "an integer >= 1", value)
        _require(_is_int(self.blank_id) and self.blank_id >= 0, "blank_id", "an integer >= 0", self.blank_id)
        _require(self.nbest <= self.beam_width, "nbest", f"<= beam_width ({self.beam_width})", self.nbest)
        value = self.cutoff_prob
        _require(_is_number(value) and 0.0 < value <= 1.0, "cutoff_prob", "in (0, 1]", value)
        value = self.beam_threshold
        _require(value is None or (_is_number(value) and value >= 0), "beam_threshold", "None or >= 0", value)
        value = self.blank_skip_threshold
        ok = value is None or (_is_number(value) and 0.0 < value <= 1.0)
        _require(ok, "blank_skip_threshold", "None or in (0, 1]", value)
        value = self.token_min_logp
        ok = value is None or (_is_number(value) and value <= 0.0)
        _require(ok, "token_min_logp", "None or a log-probability <= 0", value)
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            _require(_is_number(value) and not math.isinf(value), name, "a finite number", value)


@dataclass(frozen=True)
class Hypothesis:
    """One decoded label sequence.

    Attributes:
        token_ids: token ids, blanks removed and repeats collapsed.
        token_frames: frame at which each token starts (its most probable entry into the prefix).
        score: ``acoustic_score + lm_score``, the quantity the n-best list is sorted by.
        acoustic_score: natural-log CTC probability of the sequence, summed over the alignments the
            search kept.
        lm_score: fused LM term, alpha * LM log-prob (end of sentence included) + beta * words or units.
    """

    token_ids: list[int]
    token_frames: list[int]
    score: float
    acoustic_score: float
    lm_score: float


@dataclass(frozen=True)
class DecodeResult:
    """The n-best hypotheses of one utterance, best first, and the search statistics of its decode."""

    hypotheses: list[Hypothesis]
    stats: SearchStats

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


def _extend(
    beam: PrefixTable, tokens: list[int], logps: list[float], frame: int, trie: PrefixTrie, blank_id: int
) -> PrefixTable:
    """Advance every prefix in ``beam`` by one frame over the kept ``tokens``; returns the unpruned table.

    A blank keeps the prefix and ends its alignments in blank. Repeating the prefix's last token keeps the
    prefix (the repeat collapses) from ``p_nb`` and starts a new copy of the token only from ``p_b``.
    Any other token extends the prefix from both. A prefix without a trie node yet is keyed by ``~key``
    (negative) with ``key = parent * vocab + token``; it has a single parent, so it gets exactly one entry.
    """
    next_blank: dict[int, float] = {}
    next_label: dict[int, float] = {}
    children = trie.children
    last = trie.last
    entry_logp = trie.entry_logp
    timestep = trie.timestep
    stride = trie.vocab
    beam_label = beam.label
    for node, p_b in beam.blank.items():
        p_nb = beam_label[node]
        p_total = logaddexp(p_b, p_nb)
        node_last = last[node]
        base = node * stride
        for token, logp in zip(tokens, logps, strict=True):
            if token == blank_id:
                old = next_blank.get(node)
                if old is None:
                    next_blank[node] = p_total + logp
                    next_label[node] = NEG_INF
                else:
                    next_blank[node] = logaddexp(old, p_total + logp)
                continue
            if token == node_last:
                old = next_label.get(node)
                if old is None:
                    next_label[node] = p_nb + logp
                    next_blank[node] = NEG_INF
                else:
                    next_label[node] = logaddexp(old, p_nb + logp)
                if p_b == NEG_INF:
                    continue
                new_logp = p_b + logp
            else:
                new_logp = p_total + logp
            child = children.get(base + token)
            if child is None:
                next_label[~(base + token)] = new_logp
                next_blank[~(base + token)] = NEG_INF
                continue
            if new_logp > entry_logp[child]:
                entry_logp[child] = new_logp
                timestep[child] = frame
            old = next_label.get(child)
            if old is None:
                next_label[child] = new_logp
                next_blank[child] = NEG_INF
            else:
                next_label[child] = logaddexp(old, new_logp)
    return PrefixTable(next_blank, next_label)


def _prune(
    table: PrefixTable, trie: PrefixTrie, frame: int, beam_width: int, beam_threshold: float
) -> PrefixTable:
    """Keep the ``beam_width`` best prefixes scoring within ``beam_threshold`` of the best one.

    The score is the acoustic probability of the prefix plus its fused LM term (identically 0 without an
    LM). Survivors that have no trie node yet get one. Ties keep the earlier candidate, so decoding is
    deterministic.
    """
    label = table.label
    if trie.lm is None:
        scores = {key: logaddexp(p_b, label[key]) for key, p_b in table.blank.items()}
    else:
        fusion = trie.fusion
        scores = {
            key: logaddexp(p_b, label[key]) + (fusion[key] if key >= 0 else trie.extension_fusion(~key))
            for key, p_b in table.blank.items()
        }
    if beam_threshold != math.inf:
        floor = max(scores.values()) - beam_threshold
        scores = {key: score for key, score in scores.items() if score >= floor}
    survivors = (
        heapq.nlargest(beam_width, scores, key=scores.__getitem__) if len(scores) > beam_width else scores
    )
    beam = PrefixTable({}, {})
    for key in survivors:
        node = key if key >= 0 else trie.add(~key, frame, label[key])
        beam.blank[node] = table.blank[key]
        beam.label[node] = label[key]
    return beam


def _advance_blank_only(beam: PrefixTable, blank_logp: float) -> PrefixTable:
    """A skipped frame is treated as pure blank: every alignment now ends in blank.

    Dropping the frame instead would glue "a <blank> a" into "a a" and collapse it to "a". The scores of
    all prefixes shift by the same amount, so no pruning is needed.
    """
    label = beam.label
    blank = {node: logaddexp(p_b, label[node]) + blank_logp for node, p_b in beam.blank.items()}
    return PrefixTable(blank, dict.fromkeys(blank, NEG_INF))


class CTCBeamSearchDecoder:
    """Batched CTC prefix beam search, optionally fused with a language model.

    Args:
        config: search options.
        lm: language model for shallow fusion; ``alpha`` and ``beta`` require one.
        pieces: vocabulary pieces (index -> SentencePiece piece); required with an LM, which is queried
            with pieces (unit-level) or with words assembled from them (word-level).
    """

    def __init__(
        self,
        config: BeamSearchConfig | None = None,
        lm: LanguageModel | None = None,
        pieces: list[str] | None = None,
    ) -> None:
        self.config = config if config is not None else BeamSearchConfig()
        if lm is None and (self.config.alpha != 0.0 or self.config.beta != 0.0):
            raise ValueError("alpha and beta weight a language model: pass lm or set them to 0")
        if lm is not None and pieces is None:
            raise ValueError("pieces are required with an lm, to turn token ids into LM units")
        self.lm = lm
        self.pieces = pieces

    def __call__(self, log_probs: Any, lengths: Any) -> list[DecodeResult]:
        """Decode (batch, frames, vocab) natural-log emissions with (batch,) valid lengths (numpy arrays
        or torch tensors)."""
        valid = check_emissions(log_probs, lengths)
        vocab = log_probs.shape[2]
        check_blank_id(self.config.blank_id, vocab)
        if self.pieces is not None and len(self.pieces) != vocab:
            raise ValueError(f"pieces has {len(self.pieces)} entries but log_probs has vocab {vocab}")
        emissions = as_array(log_probs, np.float32)
        return [self._decode_one(emissions[i, :length]) for i, length in enumerate(valid)]

    def _decode_one(self, log_probs: np.ndarray) -> DecodeResult:
        """Decode one utterance's (frames, vocab) emissions, all frames valid; timed from here."""
        start = time.perf_counter()
        config = self.config
        vocab = log_probs.shape[1]
        plan = plan_frames(
            log_probs,
            blank_id=config.blank_id,
            cutoff_top_n=config.cutoff_top_n,
            cutoff_prob=config.cutoff_prob,
            token_min_logp=config.token_min_logp,
            blank_skip_threshold=config.blank_skip_threshold,
        )
        trie = PrefixTrie(vocab, self.lm, self.pieces, config.alpha, config.beta)
        beam, counts = self._search(plan, trie)
        queries_before_final = trie.lm_queries
        hypotheses = self._finish(beam, trie)
        stats = SearchStats(
            **counts,
            lm_queries_final=trie.lm_queries - queries_before_final,
            wall_time_s=time.perf_counter() - start,
        )
        return DecodeResult(hypotheses=hypotheses, stats=stats)

    def _search(self, plan: FramePlan, trie: PrefixTrie) -> tuple[PrefixTable, dict[str, list[int]]]:
        """Run all frames; returns the final beam and the per-frame counts for :class:`SearchStats`."""
        config = self.config
        threshold = math.inf if config.beam_threshold is None else config.beam_threshold
        counts: dict[str, list[int]] = {name: [] for name in PER_FRAME_FIELDS}
        beam = PrefixTable({ROOT: 0.0}, {ROOT: NEG_INF})
        for frame, (tokens, logps, skipped, blank_logp) in enumerate(
            zip(plan.tokens, plan.logps, plan.skipped, plan.blank_logps, strict=True)
        ):
            queries = trie.lm_queries
            if skipped:
                beam = _advance_blank_only(beam, blank_logp)
                extensions = 0
                candidates = len(beam.blank)
            else:
                extensions = len(beam.blank) * len(tokens)
                table = _extend(beam, tokens, logps, frame, trie, config.blank_id)
                candidates = len(table.blank)
                beam = _prune(table, trie, frame, config.beam_width, threshold)
            counts["tokens_kept"].append(len(tokens))
            counts["extensions"].append(extensions)
            counts["candidates"].append(candidates)
            counts["active"].append(len(beam.blank))
            counts["lm_queries"].append(trie.lm_queries - queries)
            counts["skipped"].append(int(skipped))
        return beam, counts

    def _finish(self, beam: PrefixTable, trie: PrefixTrie) -> list[Hypothesis]:
        """Close every surviving prefix with the LM's end-of-sentence term and return the n-best."""
        hypotheses = []
        for node, p_b in beam.blank.items():
            acoustic = logaddexp(p_b, beam.label[node])
            lm_score = trie.final_fusion(node)
            token_ids, token_frames = trie.path(node)
            hypotheses.append(Hypothesis(token_ids, token_frames, acoustic + lm_score, acoustic, lm_score))
        hypotheses.sort(key=lambda h: h.score, reverse=True)
        return hypotheses[: self.config.nbest]
