"""The decoder-aware pruning study: for every pruned model (and the unpruned one), what it costs the
encoder *and* the decoder, and what it does to accuracy.

Per model and decoder configuration it records WER, output entropy, the own decoder's search statistics,
decoder time, encoder latency at each thread count, end-to-end latency and real-time factor. Decoder
settings are tuned once on the unpruned model's validation set (:func:`tune_decoders`: the smallest
search at no WER cost, as a deployment would) and held fixed for every pruned model.

Timing discipline (see :mod:`decoding.latency`): batch size 1, explicit thread counts, warm-up, repeats,
per-utterance medians, and the models are run *interleaved* (every model once per round) so that drift
in machine load hits all of them alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from asr.audio import load_audio
from asr.checkpoint import LoadedModel, load_model
from asr.data.manifest import Utterance, read_manifest
from asr.errors import SpeechpruneError
from asr.metrics import error_counts
from asr.models.lstm_ctc import EncoderConfig, count_parameters
from asr.tokenizer import normalize_text
from decoding.backends import DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from decoding.greedy import greedy_decode
from decoding.latency import TimingSummary, device_tags
from decoding.search_stats import aggregate_stats
from pruning.cost import encoder_macs_per_second
from pruning.structure import lstm_sparsity, unit_groups


@dataclass(frozen=True)
class StudyModel:
    """A model in the study and where it came from."""

    label: str
    path: Path
    method: str  # "unpruned" or the criterion
    regularizer_weight: float
    target_sparsity: float
    regularizer: str = "none"  # the regularizer's kind, "none" when its weight is 0


REGULARIZER_TAGS = {"frame_entropy": "ent", "nonblank_entropy": "nbent", "tail_mass": "tail"}


def collect_models(baseline: Path, run_dirs: Sequence[Path]) -> list[StudyModel]:
    """The unpruned baseline and every snapshot of every pruning run (``prune_summary.json`` each)."""
    models = [StudyModel("unpruned", Path(baseline), "unpruned", 0.0, 0.0)]
    for run in map(Path, run_dirs):
        summary_path = run / "prune_summary.json"
        if not summary_path.is_file():
            raise SpeechpruneError(f"{summary_path}: missing; has the pruning run in {run} finished?")
        summary = json.loads(summary_path.read_text())
        weight = float(summary["regularizer"]["weight"])
        kind = summary["regularizer"]["kind"] if weight > 0 else "none"
        regularizer = f"{REGULARIZER_TAGS.get(kind, kind)}{weight:g}" if weight > 0 else "vanilla"
        for snapshot in summary["snapshots"]:
            tag = f"{summary['criterion']}-{regularizer}-s{round(snapshot['sparsity'] * 100):02d}"
            path = run / "snapshots" / snapshot["path"]
            models.append(StudyModel(tag, path, summary["criterion"], weight, snapshot["sparsity"], kind))
    return models


def spread_subset(utterances: list[Utterance], limit: int | None) -> list[Utterance]:
    """``limit`` utterances evenly spread over the manifest (manifests are often grouped by speaker)."""
    if limit is None or limit >= len(utterances):
        return utterances
    step = len(utterances) / limit
    return [utterances[int(i * step)] for i in range(limit)]


@torch.inference_mode()
def utterance_emissions(model: LoadedModel, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
    """(frames, vocab) log-probabilities of each utterance, encoded alone (batch size 1)."""
    outputs = []
    for waveform in waveforms:
        log_probs, lengths = model.recognizer(waveform[None], torch.tensor([waveform.shape[0]]))
        outputs.append(log_probs[0, : int(lengths[0])].contiguous())
    return outputs


def _stack(emissions: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([e.shape[0] for e in emissions])
    return torch.nn.utils.rnn.pad_sequence(emissions, batch_first=True), lengths


WIDE_CUTOFF_PROB = 0.999  # the own decoder's cutoff in the "wide" configurations


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
    for backend in ("own", "flashlight"):
        base = DecoderSettings(**settings[backend])
        specs[backend] = (backend, base)
        if lm_path is not None:
            with_lm = {**asdict(base), "lm_path": lm_path, "lm_unit": "piece", "alpha": alpha}
            if backend == "own":
                with_lm["beta"] = beta
            specs[f"{backend}+lm"] = (backend, DecoderSettings(**with_lm))
        if wide_threshold is not None:
            wide = {**asdict(base), "beam_threshold": wide_threshold}
            if backend == "own":
                wide["cutoff_prob"] = max(base.cutoff_prob, WIDE_CUTOFF_PROB)
            specs[f"{backend}-wide"] = (backend, DecoderSettings(**wide))
    return specs


def tune_decoders(
    model_path: Path,
    manifest: Path,
    beam_width: int = 16,
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
    utterances = spread_subset(read_manifest(manifest), limit)
    references = [normalize_text(u.text) for u in utterances]
    emissions = utterance_emissions(
        model, [load_audio(u.audio_filepath, model.recognizer.sample_rate) for u in utterances]
    )
    log_probs, lengths = _stack(emissions)
    vocab = len(model.tokenizer.pieces)
    trials: dict[str, list[dict[str, Any]]] = {"own": [], "flashlight": []}
    for backend in ("own", "flashlight"):
        for threshold in thresholds:
            for cutoff in cutoff_probs if backend == "own" else (1.0,):
                knobs = {
                    "beam_width": beam_width,
                    "cutoff_top_n": vocab,
                    "beam_threshold": threshold,
                    "cutoff_prob": cutoff,
                }
                decoder = make_decoder(backend, model.tokenizer, DecoderSettings(**knobs))
                results = decoder(log_probs, lengths)
                trial = {
                    "settings": knobs,
                    "wer": error_counts(references, [r.text for r in results]).wer,
                    "ms_per_utterance": 1000 * statistics.mean(r.wall_time_s for r in results),
                }
                if results[0].stats is not None:
                    trial["extensions_per_frame"] = aggregate_stats([r.stats for r in results])[
                        "extensions_per_frame"
                    ]
                trials[backend].append(trial)
    chosen = {}
    for backend, runs in trials.items():
        widest = runs[0]["wer"]
        cost = "extensions_per_frame" if backend == "own" else "ms_per_utterance"
        admissible = [t for t in runs if t["wer"] <= widest + 1e-12]
        chosen[backend] = min(admissible, key=lambda t: t[cost])["settings"]
    return {"chosen": chosen, "trials": trials, "model": str(model_path), "manifest": str(manifest)}


def _time_encoders(
    models: dict[str, LoadedModel], waveforms: list[torch.Tensor], threads: int, repeats: int
) -> dict[str, float]:
    """Per model: the mean over utterances of each utterance's median encoder time in ms (batch 1,
    features included, models interleaved round by round; round 0 warms up)."""
    torch.set_num_threads(threads)
    seconds: dict[str, list[list[float]]] = {name: [[] for _ in waveforms] for name in models}
    with torch.inference_mode():
        for round_index in range(repeats + 1):
            for name, model in models.items():
                for index, waveform in enumerate(waveforms):
                    length = torch.tensor([waveform.shape[0]])
                    started = time.perf_counter()
                    model.recognizer(waveform[None], length)
                    if round_index:
                        seconds[name][index].append(time.perf_counter() - started)
    return {
        name: 1000 * statistics.mean(statistics.median(values) for values in per_utterance)
        for name, per_utterance in seconds.items()
    }


@torch.inference_mode()
def _greedy_wer(
    models: dict[str, LoadedModel], manifest: Path, sample_rate: int, batch: int = 32
) -> dict[str, float]:
    """Greedy WER of every model on a whole manifest (batched: accuracy only, nothing is timed)."""
    utterances = read_manifest(manifest)
    references = [normalize_text(u.text) for u in utterances]
    waveforms = [load_audio(u.audio_filepath, sample_rate) for u in utterances]
    wers = {}
    for name, model in models.items():
        hypotheses = []
        for start in range(0, len(waveforms), batch):
            chunk = waveforms[start : start + batch]
            lengths = torch.tensor([w.shape[0] for w in chunk])
            log_probs, frames = model.recognizer(
                torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), lengths
            )
            hypotheses += [
                model.tokenizer.decode(ids)
                for ids in greedy_decode(log_probs, frames, model.tokenizer.blank_id)
            ]
        wers[name] = round(error_counts(references, hypotheses).wer, 5)
    return wers


def run_study(
    models: list[StudyModel],
    manifest: Path,
    specs: dict[str, tuple[str, DecoderSettings]],
    decode_limit: int | None = 300,
    repeats: int = 3,
    threads: Sequence[int] = (1, 2),
    greedy_manifests: Sequence[Path] = (),
) -> list[dict[str, Any]]:
    """Measure every model with every decoder configuration; one row per (model, decoder)."""
    loaded = {m.label: load_model(m.path) for m in models}
    reference_groups = unit_groups(loaded["unpruned"].recognizer.encoder)
    sample_rate = loaded["unpruned"].recognizer.sample_rate
    utterances = spread_subset(read_manifest(manifest), decode_limit)
    references = [normalize_text(u.text) for u in utterances]
    waveforms = [load_audio(u.audio_filepath, sample_rate) for u in utterances]
    audio_seconds = [w.shape[0] / sample_rate for w in waveforms]

    torch.set_num_threads(threads[0])
    emissions = {
        name: utterance_emissions(model, waveforms) for name, model in tqdm(loaded.items(), desc="emissions")
    }
    encoder_times = {
        t: _time_encoders(loaded, waveforms, t, repeats) for t in tqdm(threads, desc="encoder timing")
    }
    torch.set_num_threads(threads[0])
    greedy = {
        str(path): _greedy_wer(loaded, path, sample_rate)
        for path in tqdm(greedy_manifests, desc="greedy WER")
    }

    rows = []
    for spec_name, (backend, settings) in specs.items():
        decoders = {name: make_decoder(backend, model.tokenizer, settings) for name, model in loaded.items()}
        times: dict[str, list[list[float]]] = {name: [[] for _ in utterances] for name in loaded}
        results: dict[str, list] = {}
        for round_index in tqdm(range(repeats + 1), desc=f"decoder {spec_name}"):  # round 0 warms up
            for name, decoder in decoders.items():  # interleaved: every model once per round
                batch, lengths = _stack(emissions[name])
                results[name] = decoder(batch, lengths)
                for index, result in enumerate(results[name]):
                    if round_index:
                        times[name][index].append(result.wall_time_s)
        for study_model in models:
            name = study_model.label
            model = loaded[name]
            batch, lengths = _stack(emissions[name])
            entropy = entropy_report(batch, lengths, blank_id=model.tokenizer.blank_id)
            decoder_ms = [1000 * statistics.median(t) for t in times[name]]
            row: dict[str, Any] = {
                "model": name,
                "method": study_model.method,
                "regularizer": study_model.regularizer,
                "regularizer_weight": study_model.regularizer_weight,
                "target_sparsity": study_model.target_sparsity,
                "lstm_sparsity": round(lstm_sparsity(model.recognizer.encoder, reference_groups), 4),
                "parameters": count_parameters(model.recognizer.encoder),
                "encoder_shape": encoder_shape(model.recognizer.encoder.config),
                "macs_per_second": round(
                    encoder_macs_per_second(model.recognizer.encoder, model.recognizer.features.config)
                ),
                "decoder": spec_name,
                "utterances": len(utterances),
                "wer": round(error_counts(references, [r.text for r in results[name]]).wer, 5),
                "wer_greedy": round(
                    error_counts(
                        references,
                        [
                            model.tokenizer.decode(ids)
                            for ids in greedy_decode(batch, lengths, model.tokenizer.blank_id)
                        ],
                    ).wer,
                    5,
                ),
                "entropy_mean": round(entropy["entropy_mean"], 5),
                "entropy_nonblank_mean": round(entropy["entropy_nonblank_mean"], 5),
                "tokens_for_95pct_mean": round(entropy["tokens_for_mass_mean"], 4),
                "decoder_ms": round(statistics.mean(decoder_ms), 4),
                "decoder_ms_p90": round(TimingSummary.from_seconds([m / 1000 for m in decoder_ms]).p90_ms, 4),
                "audio_seconds_mean": round(statistics.mean(audio_seconds), 4),
            }
            if results[name][0].stats is not None:
                stats = aggregate_stats([r.stats for r in results[name]])
                row.update(
                    {
                        "extensions_per_frame": round(stats["extensions_per_frame"], 4),
                        "active_mean": round(stats["active_mean"], 4),
                        "tokens_kept_mean": round(stats["tokens_kept_mean"], 4),
                        "lm_queries_per_utterance": round(stats["lm_queries_total"] / stats["utterances"], 2),
                    }
                )
            for t in threads:
                row[f"encoder_ms_{t}t_model"] = round(encoder_times[t][name], 4)
            for path, wers in greedy.items():
                row[f"wer_greedy_{Path(path).stem}"] = wers[name]
            row.update({f"device_{k}": v for k, v in device_tags(threads[0]).items() if k != "threads"})
            rows.append(row)
    return summarize_rows(rows, threads)


def encoder_shape(config: EncoderConfig) -> str:
    """What an encoder's latency depends on: its layer widths (weights' values do not change it)."""
    conv = "-".join(map(str, config.conv_channels))
    lstm = "-".join(map(str, config.lstm_hidden))
    return f"conv{conv}_lstm{lstm}_{'bi' if config.bidirectional else 'uni'}"


def summarize_rows(rows: list[dict[str, Any]], threads: Sequence[int]) -> list[dict[str, Any]]:
    """Derived columns: encoder latency per shape, end-to-end latency, RTF and ratios to the unpruned model.

    Models of the same shape run the same dense kernels, so their encoder timings (``encoder_ms_Nt_model``,
    measured separately) are averaged into ``encoder_ms_Nt``: the spread between them is measurement noise,
    and pooling keeps it from deciding comparisons between equally pruned models. End-to-end latency is that
    encoder time plus this model's decoder time, over the same utterances.
    """
    for t in threads:
        per_shape: dict[str, dict[str, float]] = {}
        for row in rows:
            per_shape.setdefault(row["encoder_shape"], {})[row["model"]] = row[f"encoder_ms_{t}t_model"]
        for row in rows:
            encoder_ms = statistics.mean(per_shape[row["encoder_shape"]].values())
            row[f"encoder_ms_{t}t"] = round(encoder_ms, 4)
            row[f"end_to_end_ms_{t}t"] = round(encoder_ms + row["decoder_ms"], 4)
            row[f"rtf_{t}t"] = float(
                f"{(encoder_ms + row['decoder_ms']) / 1000 / row['audio_seconds_mean']:.4g}"
            )
    unpruned = {r["decoder"]: r for r in rows if r["method"] == "unpruned"}
    for row in rows:
        base = unpruned[row["decoder"]]
        row["mac_reduction"] = round(base["macs_per_second"] / row["macs_per_second"], 4)
        for t in threads:
            row[f"encoder_speedup_{t}t"] = round(base[f"encoder_ms_{t}t"] / row[f"encoder_ms_{t}t"], 4)
        row["decoder_slowdown"] = round(row["decoder_ms"] / base["decoder_ms"], 4)
        for t in threads:
            row[f"end_to_end_speedup_{t}t"] = round(
                base[f"end_to_end_ms_{t}t"] / row[f"end_to_end_ms_{t}t"], 4
            )
    return rows
