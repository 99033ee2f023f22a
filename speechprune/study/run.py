"""Measure every model of a study with every decoder configuration: one :class:`StudyRow` each.

Per model and decoder configuration it records WER, output entropy, the own decoder's search statistics,
decoder time, encoder latency at each thread count, end-to-end latency and real-time factor.

Timing discipline (:mod:`common.measure`): batch size 1, explicit thread counts, warm-up, repeats,
per-utterance medians, and the models are run *interleaved* (every model once per round) so that drift
in machine load hits all of them alike. Inference goes through :mod:`asr.inference`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from asr.checkpoint import LoadedModel, load_model
from asr.inference import (
    DecoderSteps,
    encode_batched,
    encode_each,
    encoder_steps,
    load_evaluation_audio,
    stack_emissions,
)
from asr.metrics import error_counts
from asr.models.lstm_ctc import count_parameters
from common.measure import device_tags, interleaved, percentile
from decoding.backends import BackendResult, DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from decoding.search_stats import aggregate_stats
from pruning.cost import encoder_macs_per_second
from pruning.structure import lstm_sparsity, unit_groups
from speechprune.study.models import StudyModel, encoder_shape
from speechprune.study.rows import StudyRow, derive


def greedy_wers(models: dict[str, LoadedModel], manifest: Path) -> dict[str, float]:
    """Greedy WER of every model on a whole manifest (batched: accuracy only, nothing is timed)."""
    sample_rate = next(iter(models.values())).recognizer.sample_rate
    audio = load_evaluation_audio(manifest, sample_rate)
    wers = {}
    for name, model in models.items():
        emissions = encode_batched(model.recognizer, audio.waveforms)
        results = make_decoder("greedy", model.tokenizer)(*stack_emissions(emissions))
        wers[name] = round(error_counts(audio.references, [r.text for r in results]).wer, 5)
    return wers


def run_study(
    models: list[StudyModel],
    manifest: Path,
    specs: dict[str, tuple[str, DecoderSettings]],
    decode_limit: int | None = 300,
    repeats: int = 3,
    threads: Sequence[int] = (1, 2),
    greedy_manifests: Sequence[Path] = (),
) -> list[StudyRow]:
    """Measure every model with every decoder configuration; one row per (model, decoder)."""
    loaded = {m.label: load_model(m.path) for m in models}
    reference_groups = unit_groups(loaded["unpruned"].recognizer.encoder)
    audio = load_evaluation_audio(manifest, loaded["unpruned"].recognizer.sample_rate, decode_limit)

    torch.set_num_threads(threads[0])
    emissions = {
        name: encode_each(model.recognizer, audio.waveforms)
        for name, model in tqdm(loaded.items(), desc="emissions")
    }
    encoder_times = {
        t: interleaved(
            {name: encoder_steps(m.recognizer, audio.waveforms) for name, m in loaded.items()},
            repeats=repeats,
            threads=t,
        )
        for t in tqdm(threads, desc="encoder timing")
    }
    torch.set_num_threads(threads[0])
    greedy = {Path(p).stem: greedy_wers(loaded, p) for p in tqdm(greedy_manifests, desc="greedy WER")}

    rows = []
    for spec_name, (backend, settings) in specs.items():
        rounds = {
            name: DecoderSteps(make_decoder(backend, model.tokenizer, settings), emissions[name])
            for name, model in loaded.items()
        }
        decoder_times = interleaved(rounds, repeats=repeats)
        for study_model in tqdm(models, desc=f"decoder {spec_name}", leave=False):
            rows.append(
                _row(
                    study_model,
                    loaded[study_model.label],
                    spec_name,
                    rounds[study_model.label].decoded,
                    emissions[study_model.label],
                    decoder_times[study_model.label].median_ms,
                    {t: encoder_times[t][study_model.label].mean_ms for t in threads},
                    {stem: wers[study_model.label] for stem, wers in greedy.items()},
                    audio.references,
                    statistics.fmean(audio.audio_seconds),
                    reference_groups,
                    threads[0],
                )
            )
    return derive(rows)


def _row(
    study_model: StudyModel,
    model: LoadedModel,
    decoder: str,
    decoded: list[BackendResult],
    emissions: list[torch.Tensor],
    decoder_ms: list[float],
    encoder_ms: dict[int, float],
    greedy_wer: dict[str, float],
    references: list[str],
    audio_seconds_mean: float,
    reference_groups: dict[str, tuple[int, int]],
    threads: int,
) -> StudyRow:
    encoder = model.recognizer.encoder
    log_probs, lengths = stack_emissions(emissions)
    entropy = entropy_report(log_probs, lengths, blank_id=model.tokenizer.blank_id)
    greedy = make_decoder("greedy", model.tokenizer)(log_probs, lengths)
    search = {}
    if decoded[0].stats is not None:
        stats = aggregate_stats([r.stats for r in decoded])
        search = {
            "extensions_per_frame": round(stats["extensions_per_frame"], 4),
            "active_mean": round(stats["active_mean"], 4),
            "tokens_kept_mean": round(stats["tokens_kept_mean"], 4),
            "lm_queries_per_utterance": round(stats["lm_queries_total"] / stats["utterances"], 2),
        }
    return StudyRow(
        model=study_model.label,
        method=study_model.method,
        regularizer=study_model.regularizer,
        regularizer_weight=study_model.regularizer_weight,
        target_sparsity=study_model.target_sparsity,
        lstm_sparsity=round(lstm_sparsity(encoder, reference_groups), 4),
        parameters=count_parameters(encoder),
        encoder_shape=encoder_shape(encoder.config),
        macs_per_second=round(encoder_macs_per_second(encoder, model.recognizer.features.config)),
        decoder=decoder,
        utterances=len(references),
        wer=round(error_counts(references, [r.text for r in decoded]).wer, 5),
        wer_greedy=round(error_counts(references, [r.text for r in greedy]).wer, 5),
        entropy_mean=round(entropy["entropy_mean"], 5),
        entropy_nonblank_mean=round(entropy["entropy_nonblank_mean"], 5),
        tokens_for_95pct_mean=round(entropy["tokens_for_mass_mean"], 4),
        decoder_ms=round(statistics.fmean(decoder_ms), 4),
        decoder_ms_p90=round(percentile(decoder_ms, 90), 4),
        audio_seconds_mean=round(audio_seconds_mean, 4),
        encoder_ms_model={t: round(ms, 4) for t, ms in encoder_ms.items()},
        search=search,
        wer_greedy_by_manifest=greedy_wer,
        device={k: v for k, v in device_tags(threads).items() if k != "threads"},
    )
