"""Decoder settings for the study: tuned once on the unpruned model's validation set, then held fixed.

:func:`tune_decoders` finds the smallest search at no WER cost, as a deployment would;
:func:`decoder_specs` turns the chosen settings into the study's named configurations (tuned, +lm, -wide).
:func:`retuned_specs` gives every model its own tighter beam threshold, or its own sharpening
temperature, within the unpruned model's WER: the free levers a regularizer that costs a training run
must beat. :func:`decode_grid` and :func:`cheapest_within` are the one implementation of "the cheapest
settings within a WER budget", shared with the latency search's co-tuning.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from asr.checkpoint import load_model
from asr.inference import encode_each, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from asr.timing import DecoderSteps
from asr.tokenizer import Tokenizer
from common.measure import interleaved
from decoding.backends import DecoderSettings, make_decoder
from decoding.search_stats import aggregate_stats
from speechprune.study.rows import RETUNED_LEVERS

WIDE_CUTOFF_PROB = 0.999  # the own decoder's cutoff in the "wide" configurations
TUNED_BACKENDS = ("own", "flashlight")
RETUNE_THRESHOLDS = (12.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0)
RETUNE_TEMPERATURES = (0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass(frozen=True)
class GridPoint:
    """One decoder setting tried on a model's emissions: its WER and mean decode time per utterance."""

    settings: DecoderSettings
    wer: float
    mean_ms: float


def decode_grid(
    backend: str,
    tokenizer: Tokenizer,
    grid: Sequence[DecoderSettings],
    emissions: Sequence[Any],
    references: Sequence[str],
) -> list[GridPoint]:
    """Decode the same emissions with every setting of ``grid``, timed interleaved (one warm-up pass,
    whose texts give the WER, and one timed pass), so the points are compared under the same load."""
    rounds = {i: DecoderSteps(make_decoder(backend, tokenizer, s), emissions) for i, s in enumerate(grid)}
    timings = interleaved(rounds, repeats=1, warmup=1)
    return [
        GridPoint(s, error_counts(references, [r.text for r in rounds[i].decoded]).wer, timings[i].mean_ms)
        for i, s in enumerate(grid)
    ]


def cheapest_within(points: Sequence[GridPoint], wer_budget: float) -> GridPoint | None:
    """The fastest point whose WER is at most ``wer_budget``; None when none is."""
    allowed = [p for p in points if p.wer <= wer_budget + 1e-12]
    return min(allowed, key=lambda p: p.mean_ms) if allowed else None


def threshold_grid(settings: DecoderSettings) -> list[DecoderSettings]:
    """``settings`` and every tighter beam threshold of :data:`RETUNE_THRESHOLDS`."""
    current = settings.beam_threshold if settings.beam_threshold is not None else float("inf")
    return [settings, *(replace(settings, beam_threshold=t) for t in RETUNE_THRESHOLDS if t < current)]


def temperature_grid(settings: DecoderSettings) -> list[DecoderSettings]:
    """``settings`` and the same search on outputs sharpened by every temperature of the grid."""
    return [settings, *(replace(settings, temperature=settings.temperature * t) for t in RETUNE_TEMPERATURES)]


def retuned_specs(
    emissions: dict[str, Sequence[Any]],
    tokenizers: dict[str, Tokenizer],
    references: Sequence[str],
    specs: dict[str, tuple[str, DecoderSettings]],
    tolerance: float = 0.0,
) -> tuple[dict[str, tuple[str, dict[str, DecoderSettings]]], dict[str, Any]]:
    """Per beam-search configuration, two more: each model's own tighter beam threshold (``+thr``) and
    its own sharpening temperature (``+T``), the fastest on its ``emissions`` (validation speech) whose
    WER stays within that model's WER with the fixed settings + ``tolerance``: the rule the unpruned
    model's settings were tuned by, applied to every model, so each lever is compared at equal WER.

    Returns the configurations (settings per model label) and, for a report, every choice with its WER.
    """
    retuned: dict[str, tuple[str, dict[str, DecoderSettings]]] = {}
    choices: dict[str, Any] = {}
    for name, (backend, settings) in specs.items():
        if backend == "greedy":
            continue
        for lever, make_grid in zip(RETUNED_LEVERS, (threshold_grid, temperature_grid), strict=True):
            per_model, chosen = {}, {}
            for label, model_emissions in emissions.items():
                points = decode_grid(
                    backend, tokenizers[label], make_grid(settings), model_emissions, references
                )
                best = (
                    cheapest_within(points, points[0].wer + tolerance) or points[0]
                )  # the first is the fixed
                per_model[label] = best.settings
                chosen[label] = {
                    "beam_threshold": best.settings.beam_threshold,
                    "temperature": best.settings.temperature,
                    "validation_wer": round(best.wer, 5),
                    "fixed_validation_wer": round(points[0].wer, 5),
                    "decoder_ms": round(best.mean_ms, 4),
                    "fixed_decoder_ms": round(points[0].mean_ms, 4),
                }
            retuned[f"{name}+{lever}"] = (backend, per_model)
            choices[f"{name}+{lever}"] = {"tolerance": tolerance, "models": chosen}
    return retuned, choices


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
