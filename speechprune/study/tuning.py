"""Decoder settings for the study: tuned once on the unpruned model's validation set, then held fixed.

:func:`tune_decoders` finds the smallest search at no WER cost, as a deployment would;
:func:`decoder_specs` turns the chosen settings into the study's named configurations (tuned, +lm, -wide).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from asr.checkpoint import load_model
from asr.inference import encode_each, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from decoding.backends import DecoderSettings, make_decoder
from decoding.search_stats import aggregate_stats

WIDE_CUTOFF_PROB = 0.999  # the own decoder's cutoff in the "wide" configurations
TUNED_BACKENDS = ("own", "flashlight")


def decoder_specs(
    settings: dict[str, dict[str, Any]],
    lm_path: Path | None,
    alpha: float,
    beta: float,
    wide_threshold: float | None = None,
) -> dict[str, tuple[str, DecoderSettings]]:
    """The study's decoder configurations: the tuned search settings per backend, each also with the LM,
    and, with ``wide_threshold``, a looser "-wide" variant (that beam threshold; the own decoder's
    cutoff_prob at 0.999) showing how much the answer depends on how tightly the search is pruned."""
    specs = {}
    for backend in TUNED_BACKENDS:
        base = DecoderSettings(**settings[backend])
        specs[backend] = (backend, base)
        if lm_path is not None:
            with_lm = replace(base, lm_path=lm_path, lm_unit="piece", alpha=alpha)
            specs[f"{backend}+lm"] = (backend, replace(with_lm, beta=beta) if backend == "own" else with_lm)
        if wide_threshold is not None:
            wide = replace(base, beam_threshold=wide_threshold)
            if backend == "own":
                wide = replace(wide, cutoff_prob=max(base.cutoff_prob, WIDE_CUTOFF_PROB))
            specs[f"{backend}-wide"] = (backend, wide)
    return specs


def tune_decoders(
    model_path: Path,
    manifest: Path,
    beam_width: int = DecoderSettings.beam_width,
    limit: int | None = 300,
    thresholds: Sequence[float | None] = (None, 12.0, 8.0, 5.0, 3.0),
    cutoff_probs: Sequence[float] = (1.0, 0.999, 0.99, 0.95),
) -> dict[str, Any]:
    """Tightest search settings with no WER cost on the unpruned model's validation utterances.

    Own decoder: the (beam_threshold, cutoff_prob) pair with the fewest prefix extensions per frame among
    those whose WER is no worse than the widest search's. flashlight (no cutoff_prob): the beam_threshold
    with the lowest decode time under the same rule. Every token is tried per frame unless cut off.
    """
    model = load_model(model_path)
    audio = load_evaluation_audio(manifest, model.recognizer.sample_rate, limit)
    log_probs, lengths = stack_emissions(encode_each(model.recognizer, audio.waveforms))
    vocab = len(model.tokenizer.pieces)
    trials: dict[str, list[dict[str, Any]]] = {backend: [] for backend in TUNED_BACKENDS}
    for backend in TUNED_BACKENDS:
        for threshold in thresholds:
            for cutoff in cutoff_probs if backend == "own" else (1.0,):
                settings = DecoderSettings(
                    beam_width=beam_width, cutoff_top_n=vocab, beam_threshold=threshold, cutoff_prob=cutoff
                )
                results = make_decoder(backend, model.tokenizer, settings)(log_probs, lengths)
                knobs = {k: getattr(settings, k) for k in ("beam_width", "cutoff_top_n", "beam_threshold")}
                trial = {
                    "settings": {**knobs, "cutoff_prob": cutoff},
                    "wer": error_counts(audio.references, [r.text for r in results]).wer,
                    "ms_per_utterance": 1000 * statistics.mean(r.wall_time_s for r in results),
                }
                if results[0].stats is not None:
                    stats = aggregate_stats([r.stats for r in results])
                    trial["extensions_per_frame"] = stats["extensions_per_frame"]
                trials[backend].append(trial)
    chosen = {}
    for backend, runs in trials.items():
        widest = runs[0]["wer"]
        cost = "extensions_per_frame" if backend == "own" else "ms_per_utterance"
        admissible = [t for t in runs if t["wer"] <= widest + 1e-12]
        chosen[backend] = min(admissible, key=lambda t: t[cost])["settings"]
    return {"chosen": chosen, "trials": trials, "model": str(model_path), "manifest": str(manifest)}
