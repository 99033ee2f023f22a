"""CTC decoding for speechprune: greedy and prefix beam search that report their search-space size.

Pruning an encoder flattens its per-frame distributions and makes beam search explore more; the decoders
here record that work (:class:`SearchStats`) on every decode, and :mod:`decoding.entropy` measures the
flattening itself on the emissions.
"""

from decoding.arpa import ArpaSummary, build_arpa
from decoding.backends import (
    BackendResult,
    DecoderBackend,
    DecoderSettings,
    available_backends,
    make_decoder,
    write_lexicon,
)
from decoding.beam_search import BeamSearchConfig, CTCBeamSearchDecoder, DecodeResult, Hypothesis
from decoding.entropy import entropy_report, frame_entropy, mean_frame_entropy, tokens_for_mass
from decoding.greedy import greedy_decode, greedy_decode_with_timesteps
from decoding.lm import KenLMLanguageModel, LanguageModel
from decoding.search_stats import SearchStats, aggregate_stats
from decoding.token_cutoffs import FramePlan, plan_frames

__all__ = [
    "ArpaSummary",
    "BackendResult",
    "BeamSearchConfig",
    "CTCBeamSearchDecoder",
    "DecodeResult",
    "DecoderBackend",
    "DecoderSettings",
    "FramePlan",
    "Hypothesis",
    "KenLMLanguageModel",
    "LanguageModel",
    "SearchStats",
    "aggregate_stats",
    "available_backends",
    "build_arpa",
    "entropy_report",
    "frame_entropy",
    "greedy_decode",
    "mean_frame_entropy",
    "greedy_decode_with_timesteps",
    "make_decoder",
    "plan_frames",
    "tokens_for_mass",
    "write_lexicon",
]
