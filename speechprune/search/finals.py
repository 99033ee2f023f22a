"""After the search: the best candidate of each budget gets its final fine-tune and is measured again.

The check is a separate interleaved run on the target of the unpruned model, a second copy of it (the
noise floor: two copies of one model should time alike, and their difference is what a "fit" within
noise means here) and every budget's final model, each with its decoder settings. Final models are also
scored on the user's test manifests (WER with their decoder, and greedy).
"""

from __future__ import annotations

import shutil
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.checkpoint import load_model
from asr.inference import encode_batched, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from decoding.backends import make_decoder
from speechprune.search.finetune import candidate_seed
from speechprune.search.scale_out import FineTuneJob
from speechprune.search.targets import Latency, Measured, TimingJob, settings_from_dict
from speechprune.search.tree import REFERENCE, ROOT, LatencySearch

COPY = "unpruned-copy"


@dataclass
class FinalModel:
    """A budget's exported model and its measured fit."""

    method: str  # "search" or "uniform"
    budget: str
    budget_value: float
    budget_unit: str
    candidate: str
    model: str
    widths: dict[str, int]
    decoder: dict[str, Any]
    search_ratios: dict[str, float]  # measured during the search (before the final fine-tune)
    encoder_ms: float = 0.0
    decoder_ms: float = 0.0
    ms_per_second: float = 0.0
    end_to_end_ratio: float = 0.0  # to the unpruned model, in the final check (median over its runs)
    end_to_end_ratio_checks: list[float] | None = None  # each run of the check (search.final_checks)
    encoder_ratio: float = 0.0
    objective_ratio_to_budget: float = 0.0  # measured objective / budget (<= 1 fits)
    wer_calibration: float = 0.0
    test_wer: dict[str, float] | None = None
    test_wer_greedy: dict[str, float] | None = None


def finalize(search: LatencySearch, test_manifests: list[Path]) -> dict[str, Any]:
    """Final fine-tune, separate interleaved measurement and test WER of every budget's best candidate."""
    exp_dir, state = search.exp_dir, search.state
    root = state.candidates[ROOT]
    finals: list[FinalModel] = []
    unmet: list[dict[str, Any]] = []
    final_tunes: list[FineTuneJob] = []
    methods = ["search"]
    if search.search.uniform_sparsities:
        search.add_uniform_baseline()
        methods.append("uniform")
    picks = [(m, r) for m in methods for r in search.budget_results(uniform=m == "uniform")]
    for method, result in picks:
        if result.candidate is None:
            closest = state.candidates.get(result.closest) if result.closest else None
            unmet.append(
                {
                    "method": method,
                    "budget": result.budget.label,
                    "closest": closest.id if closest else None,
                    "closest_value": round(search._value(closest, result.budget), 4) if closest else None,
                    "closest_wer": closest.wer if closest else None,
                }
            )
            continue
        record = state.candidates[result.candidate]
        name = result.budget.label if method == "search" else f"uniform_{result.budget.label}"
        # named by the candidate too: a resumed (extended) search may pick another one for this budget
        out = exp_dir / "budgets" / f"{name}-{zlib.crc32(record.id.encode()):08x}.pt"
        if not out.is_file():
            seed = candidate_seed(search.search.seed, f"final/{record.id}")
            final_tunes.append(
                FineTuneJob(search._path(record), out, search.search.final_finetune_batches, seed)
            )
        finals.append(
            FinalModel(
                method=method,
                budget=result.budget.label,
                budget_value=result.budget.value,
                budget_unit=result.budget.unit,
                candidate=record.id,
                model=str(out.relative_to(exp_dir)),
                widths=record.widths,
                decoder=record.decoder,
                search_ratios=record.ratios,
            )
        )
    for _ in search.fine_tunes.run(final_tunes):  # independent: at once on a Ray cluster
        pass
    copy = exp_dir / "budgets" / "unpruned_copy.pt"
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root.model, copy)
    jobs = {
        REFERENCE: search._job(root),
        COPY: TimingJob(copy, root.decoder["backend"], search._job(root).settings),
    }
    jobs.update(
        {
            f.model: TimingJob(exp_dir / f.model, f.decoder["backend"], settings_from_dict(f.decoder))
            for f in finals
        }
    )
    # each check a separate interleaved run (a fresh worker): their spread is what one check is worth
    checks = [search.target.measure(jobs) for _ in range(search.search.final_checks)]
    reference = _median_latency(checks, REFERENCE)
    references = search.calibration.references
    for final in finals:
        latency = _median_latency(checks, final.model)
        final.encoder_ms = round(latency.encoder_ms, 4)
        final.decoder_ms = round(latency.decoder_ms, 4)
        final.ms_per_second = round(latency.ms_per_second, 4)
        final.end_to_end_ratio_checks = _ratios(checks, final.model, "end_to_end_ms")
        final.end_to_end_ratio = round(statistics.median(final.end_to_end_ratio_checks), 4)
        final.encoder_ratio = round(statistics.median(_ratios(checks, final.model, "encoder_ms")), 4)
        objective = search.search.objective
        if final.budget_unit == "fraction":
            value = {"end_to_end": final.end_to_end_ratio, "encoder": final.encoder_ratio}.get(
                objective, final.search_ratios["macs"]
            )
        else:
            value = latency.encoder_ms_per_second if objective == "encoder" else latency.ms_per_second
        final.objective_ratio_to_budget = round(value / final.budget_value, 4)
        final.wer_calibration = round(error_counts(references, checks[0][final.model].texts).wer, 5)
        final.test_wer, final.test_wer_greedy = test_wers(
            exp_dir / final.model, final.decoder, test_manifests
        )
    copy_checks = _ratios(checks, COPY, "end_to_end_ms")
    state.save(exp_dir)  # the elapsed time includes the final fine-tunes and the check
    return {
        "objective": search.search.objective,
        "stop_reason": state.stop_reason,
        "candidates_evaluated": len(state.candidates) - 1,
        "elapsed_seconds": state.elapsed_seconds,
        "levels": len(state.levels),
        "target": search.target.describe(),
        "calibration_manifest": search.search.calibration_manifest,
        "calibration_utterances": len(references),
        "unpruned": {
            **reference.to_dict(),
            "ms_per_second": round(reference.ms_per_second, 4),
            "wer_calibration": round(error_counts(references, checks[0][REFERENCE].texts).wer, 5),
            "test_wer": test_wers(Path(root.model), root.decoder, test_manifests)[0],
        },
        "noise_floor": {
            "copy_end_to_end_ratio": round(statistics.median(copy_checks), 4),
            "copy_end_to_end_ratio_checks": copy_checks,
            "copy_encoder_ratio": round(statistics.median(_ratios(checks, COPY, "encoder_ms")), 4),
            "checks": len(checks),
        },
        "finals": [final.__dict__ for final in finals],
        "unmet_budgets": unmet,
    }


def _median_latency(checks: list[dict[str, Measured]], name: str) -> Latency:
    """``name``'s latency, each part the median over the check's runs."""
    latencies = [check[name].latency for check in checks]
    return Latency(
        statistics.median(lat.encoder_ms for lat in latencies),
        statistics.median(lat.decoder_ms for lat in latencies),
        latencies[0].audio_seconds_mean,
    )


def _ratios(checks: list[dict[str, Measured]], name: str, part: str) -> list[float]:
    """``name``'s ``part`` (an attribute of Latency) over the unpruned model's, in each run of the check."""
    return [
        round(getattr(check[name].latency, part) / getattr(check[REFERENCE].latency, part), 4)
        for check in checks
    ]


def test_wers(
    model_path: Path, decoder: dict[str, Any], manifests: list[Path]
) -> tuple[dict[str, float], dict[str, float]]:
    """WER with the model's decoder and greedy WER on each test manifest (batched: accuracy only)."""
    model = load_model(model_path)
    with_decoder, greedy = {}, {}
    for manifest in manifests:
        audio = load_evaluation_audio(manifest, model.recognizer.sample_rate)
        emissions = stack_emissions(encode_batched(model.recognizer, audio.waveforms))
        decoded = make_decoder(decoder["backend"], model.tokenizer, settings_from_dict(decoder))(*emissions)
        plain = make_decoder("greedy", model.tokenizer)(*emissions)
        with_decoder[manifest.stem] = round(error_counts(audio.references, [r.text for r in decoded]).wer, 5)
        greedy[manifest.stem] = round(error_counts(audio.references, [r.text for r in plain]).wer, 5)
    return with_decoder, greedy
