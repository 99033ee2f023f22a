"""CTC decoding for speechprune: greedy and prefix beam search that report their search-space size.

Pruning an encoder flattens its per-frame distributions and makes beam search explore more; the decoders
here record that work (:class:`SearchStats`) on every decode, and :mod:`decoding.entropy` measures the
flattening itself on the emissions.

Names are imported from their modules on first use, so that the plain-Python parts (``decoding.paths``)
load fast; nothing here needs torch except the entropy statistics (:mod:`decoding.entropy`, a training
loss too) and ctcdecode's backend, so the device runtime decodes without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "ArpaSummary": "arpa",
    "BackendResult": "backends",
    "BeamSearchConfig": "beam_search",
    "CTCBeamSearchDecoder": "beam_search",
    "DecodeResult": "beam_search",
    "DecoderBackend": "backends",
    "DecoderSettings": "backends",
    "FramePlan": "token_cutoffs",
    "Hypothesis": "beam_search",
    "KenLMLanguageModel": "lm",
    "LanguageModel": "lm",
    "SearchStats": "search_stats",
    "aggregate_stats": "search_stats",
    "as_array": "_inputs",
    "available_backends": "backends",
    "build_arpa": "arpa",
    "entropy_report": "entropy",
    "frame_entropy": "entropy",
    "greedy_decode": "greedy",
    "greedy_decode_with_timesteps": "greedy",
    "make_decoder": "backends",
    "mean_frame_entropy": "entropy",
    "plan_frames": "token_cutoffs",
    "tokens_for_mass": "entropy",
    "write_lexicon": "backends",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'decoding' has no attribute {name!r}")
    return getattr(importlib.import_module(f"decoding.{_SOURCES[name]}"), name)
