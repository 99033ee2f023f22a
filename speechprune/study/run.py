"""Measure every model of a study with every decoder configuration: one :class:`StudyRow` each.

Per model and decoder configuration it records WER, output entropy, the own decoder's search statistics,
decoder time, encoder latency at each thread count, end-to-end latency and real-time factor.

Timing discipline (:mod:`common.measure`): batch size 1, explicit thread counts, warm-up, repeats,
per-utterance medians, and the models are run *interleaved* (every model once per round) so that drift
in machine load hits all of them alike. Inference goes through :mod:`asr.inference` (torch) or, for the
exported variants, :mod:`asr.onnx_model` (onnxruntime, float32 or int8), timed alike (:mod:`asr.timing`).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from asr.checkpoint import LoadedModel, load_model
from asr.export import export_model
from asr.inference import encode_batched, encode_each, encoder_steps, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from asr.models.lstm_ctc import count_parameters
from asr.onnx_model import ExportedModel, precision_of
from asr.timing import DecoderSteps, exported_steps
from common.measure import Round, device_tags, interleaved, percentile
from decoding.backends import BackendResult, DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from decoding.search_stats import aggregate_stats
from pruning.cost import encoder_macs_per_second
from pruning.structure import lstm_sparsity, unit_groups
from speechprune.study.models import StudyModel, encoder_shape
from speechprune.study.rows import StudyRow, derive
from speechprune.study.tuning import retuned_specs


class ModelRunner:
    """How one study model is encoded and timed: the model file through torch, or its export through
    onnxruntime (one session per thread count, since a session's threads are fixed when it is made)."""

    def __init__(self, loaded: LoadedModel, exported: dict[int, ExportedModel] | None = None) -> None:
        self.loaded = loaded
        self.exported = exported or {}

    def emissions(self, waveforms: Sequence[torch.Tensor], batched: bool = False) -> list[torch.Tensor]:
        """Per utterance (frames, vocab) log-probabilities; ``batched`` (torch only) for accuracy runs."""
        if self.exported:
            model = next(iter(self.exported.values()))
            return [torch.from_numpy(e) for e in model.encode([w.numpy() for w in waveforms])]
        encode = encode_batched if batched else encode_each
        return encode(self.loaded.recognizer, waveforms)

    def steps(self, waveforms: Sequence[torch.Tensor], threads: int) -> list[Round]:
        if self.exported:
            return exported_steps(self.exported[threads], waveforms)
        return encoder_steps(self.loaded.recognizer, waveforms)


def open_runners(models: list[StudyModel], threads: Sequence[int], scratch: Path) -> dict[str, ModelRunner]:
    """A runner per model; every model file that a non-torch variant needs is exported once to ``scratch``."""
    loaded = {path: load_model(path) for path in {m.path for m in models}}
    exports: dict[Path, Path] = {}
    runners = {}
    for model in models:
        if model.runtime == "torch":
            runners[model.label] = ModelRunner(loaded[model.path])
            continue
        if model.path not in exports:
            folder = scratch / f"export{len(exports)}"
            exports[model.path] = export_model(model.path, folder, int8=True).parent
        precision = precision_of(model.runtime)
        sessions = {t: ExportedModel(exports[model.path], threads=t, precision=precision) for t in threads}
        runners[model.label] = ModelRunner(loaded[model.path], sessions)
    return runners


def greedy_wers(runners: dict[str, ModelRunner], manifest: Path) -> dict[str, float]:
    """Greedy WER of every model on a whole manifest (nothing is timed)."""
    sample_rate = next(iter(runners.values())).loaded.recognizer.sample_rate
    audio = load_evaluation_audio(manifest, sample_rate)
    wers = {}
    for name, runner in runners.items():
        emissions = runner.emissions(audio.waveforms, batched=True)
        results = make_decoder("greedy", runner.loaded.tokenizer)(*stack_emissions(emissions))
        wers[name] = round(error_counts(audio.references, [r.text for r in results]).wer, 5)
    return wers


Specs = dict[str, tuple[str, DecoderSettings | Mapping[str, DecoderSettings]]]  # settings, or per model


def run_study(
    models: list[StudyModel],
    manifest: Path,
    specs: dict[str, tuple[str, DecoderSettings]],
    decode_limit: int | None = 300,
    repeats: int = 3,
    threads: Sequence[int] = (1, 2),
    greedy_manifests: Sequence[Path] = (),
    retune_manifest: Path | None = None,
    retune_tolerance: float = 0.0,
    retune_decoders: Sequence[str] | None = None,
) -> tuple[list[StudyRow], dict[str, Any]]:
    """Measure every model with every decoder configuration; one row per (model, decoder).

    With ``retune_manifest`` (validation speech), every beam-search configuration (or those named in
    ``retune_decoders``) also runs with each model's own re-tuned beam threshold and temperature
    (:func:`retuned_specs`). Returns the rows and those choices (empty without a retune manifest).
    """
    with tempfile.TemporaryDirectory(prefix="speechprune-study-") as scratch:
        runners = open_runners(models, threads, Path(scratch))
        torch.set_num_threads(threads[0])
        choices: dict[str, Any] = {}
        all_specs: Specs = dict(specs)
        if retune_manifest is not None:
            sample_rate = next(iter(runners.values())).loaded.recognizer.sample_rate
            validation = load_evaluation_audio(retune_manifest, sample_rate, decode_limit)
            emissions = {name: runner.emissions(validation.waveforms) for name, runner in runners.items()}
            tokenizers = {name: runner.loaded.tokenizer for name, runner in runners.items()}
            chosen = {k: v for k, v in specs.items() if retune_decoders is None or k in retune_decoders}
            retuned, choices = retuned_specs(
                emissions, tokenizers, validation.references, chosen, retune_tolerance
            )
            all_specs.update(retuned)
        rows = _measure(
            models, runners, manifest, all_specs, decode_limit, repeats, threads, greedy_manifests
        )
        return rows, choices


def _measure(
    models: list[StudyModel],
    runners: dict[str, ModelRunner],
    manifest: Path,
    specs: Specs,
    decode_limit: int | None,
    repeats: int,
    threads: Sequence[int],
    greedy_manifests: Sequence[Path],
) -> list[StudyRow]:
    reference = runners["unpruned"].loaded
    reference_groups = unit_groups(reference.recognizer.encoder)
    audio = load_evaluation_audio(manifest, reference.recognizer.sample_rate, decode_limit)

    torch.set_num_threads(threads[0])
    emissions = {
        name: runner.emissions(audio.waveforms) for name, runner in tqdm(runners.items(), desc="emissions")
    }
    encoder_times = {
        t: interleaved(
            {name: runner.steps(audio.waveforms, t) for name, runner in runners.items()},
            repeats=repeats,
            threads=t,
        )
        for t in tqdm(threads, desc="encoder timing")
    }
    torch.set_num_threads(threads[0])
    greedy = {Path(p).stem: greedy_wers(runners, p) for p in tqdm(greedy_manifests, desc="greedy WER")}

    rows = []
    for spec_name, (backend, spec_settings) in specs.items():
        settings = {
            name: spec_settings[name] if isinstance(spec_settings, Mapping) else spec_settings
            for name in runners
        }
        rounds = {
            name: DecoderSteps(
                make_decoder(backend, runner.loaded.tokenizer, settings[name]), emissions[name]
            )
            for name, runner in runners.items()
        }
        decoder_times = interleaved(rounds, repeats=repeats)
        for study_model in tqdm(models, desc=f"decoder {spec_name}", leave=False):
            rows.append(
                _row(
                    study_model,
                    runners[study_model.label].loaded,
                    spec_name,
                    settings[study_model.label],
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
    settings: DecoderSettings,
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
        beam_threshold=settings.beam_threshold,
        temperature=settings.temperature,
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
        runtime=study_model.runtime,
        seed=study_model.seed,
    )
