"""A latency search from a config file: what ``speechprune search`` runs.

Config sections: ``search`` (:class:`SearchConfig`), ``decoder`` (backend + decoder settings),
``target`` (local: threads, cores, repeats, warmup), ``regularizer`` (the output-sharpness term of the
fine-tunes), and ``data``, ``augment``, ``optim``, ``trainer`` as for pruning (the fine-tunes' data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr.checkpoint import load_model
from asr.config import build_section, check_keys
from asr.inference import load_evaluation_audio
from asr.training import RUN_SECTIONS
from common.errors import SpeechpruneError
from common.fileio import write_csv, write_json
from speechprune.search.config import DecoderChoice, SearchConfig
from speechprune.search.finals import finalize
from speechprune.search.finetune import FineTuner
from speechprune.search.plots import write_search_plots
from speechprune.search.scale_out import make_fine_tunes
from speechprune.search.state import SearchState, fingerprint
from speechprune.search.targets import LatencyTarget, LocalTarget, RemoteTarget
from speechprune.search.tree import LatencySearch

TARGET_KEYS = {"kind", "threads", "cores", "repeats", "warmup", "url", "token_file", "runtime"}
SEARCH_SECTIONS = (*RUN_SECTIONS, "search", "decoder", "target", "regularizer")
RESULTS_NAME = "search_results.json"
# Search settings a rerun may change without invalidating the tree so far: it is extended (deeper, to
# tighter budgets, with more baseline points) or finished differently, and the fine-tune cache is only
# where fine-tunes are kept.
EXTENSIBLE_SEARCH_KEYS = (
    "max_depth",
    "budgets",
    "final_finetune_batches",
    "final_checks",
    "uniform_sparsities",
    "finetune_cache",
    "executor",  # where fine-tunes run does not change them (the same seeds, data and threads)
    "ray_address",
    "ray_cpus_per_task",
)


def make_target(section: dict[str, Any], search: SearchConfig, sample_rate: int) -> LatencyTarget:
    """The ``target`` section: ``kind: local`` (this machine, a fresh worker per measurement) or
    ``kind: remote`` (a board running ``speechprune device serve`` at ``url``, token in ``token_file``)."""
    unknown = sorted(set(section) - TARGET_KEYS)
    if unknown:
        raise SpeechpruneError(
            f"config section 'target': unknown keys {unknown}; known: {sorted(TARGET_KEYS)}"
        )
    kind = section.get("kind", "local")
    common = {
        "threads": int(section.get("threads", 1)),
        "repeats": int(section.get("repeats", 3)),
        "warmup": int(section.get("warmup", 1)),
    }
    if kind == "remote":
        if not section.get("url") or not section.get("token_file"):
            raise SpeechpruneError("target.kind remote needs target.url and target.token_file")
        token_file = Path(section["token_file"])
        if not token_file.is_file():
            raise SpeechpruneError(f"{token_file}: no such token file (target.token_file)")
        return RemoteTarget(
            str(section["url"]),
            token_file.read_text(encoding="utf-8").strip(),
            Path(search.calibration_manifest),
            search.calibration_limit,
            sample_rate,
            runtime=str(section.get("runtime", "onnx")),
            **common,
        )
    if kind != "local":
        raise SpeechpruneError(f"target.kind {kind!r}: local or remote")
    return LocalTarget(
        Path(search.calibration_manifest),
        search.calibration_limit,
        sample_rate,
        cores=section.get("cores"),
        runtime=str(section.get("runtime", "torch")),
        **common,
    )


def run_search(
    config: dict[str, Any],
    base_model: str | Path,
    exp_dir: str | Path,
    test_manifests: list[Path] | None = None,
    target: LatencyTarget | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Search (resuming from ``exp_dir``), finalize every budget, write results and plots; returns them."""
    exp_dir = Path(exp_dir)
    check_keys(config, SEARCH_SECTIONS, "search config")
    search = build_section(config, "search", SearchConfig)
    budgets = search.parsed_budgets()
    decoder = DecoderChoice.from_section(config.get("decoder"))
    test_manifests = [Path(m) for m in test_manifests or []]
    for manifest in [Path(search.calibration_manifest), *test_manifests]:
        if not manifest.is_file():
            raise SpeechpruneError(f"{manifest}: no such manifest")
    base = load_model(base_model)
    cache = Path(search.finetune_cache) if search.finetune_cache else None
    tuner = FineTuner(
        config, base.tokenizer, base.recognizer.sample_rate, cache_dir=cache, teacher=base_model
    )
    deciding = {k: v for k, v in (config.get("search") or {}).items() if k not in EXTENSIBLE_SEARCH_KEYS}
    state = SearchState.load_or_new(
        exp_dir,
        fingerprint(
            {
                "model": str(Path(base_model).resolve()),
                "search": deciding,
                **{k: config.get(k) for k in ("decoder", "target", "regularizer", "optim", "data")},
            }
        ),
    )
    exp_dir.mkdir(parents=True, exist_ok=True)
    sample_rate = base.recognizer.sample_rate
    calibration = load_evaluation_audio(search.calibration_manifest, sample_rate, search.calibration_limit)
    target = target or make_target(dict(config.get("target") or {}), search, sample_rate)
    fine_tunes = make_fine_tunes(tuner, search.executor, search.ray_address, search.ray_cpus_per_task)
    searcher = LatencySearch(
        Path(base_model), exp_dir, search, decoder, target, fine_tunes, state, calibration
    )
    searcher.run(progress=progress)
    results = finalize(searcher, test_manifests)
    results["budgets"] = [b.label for b in budgets]
    results["budget_fractions"] = [b.value for b in budgets if b.unit == "fraction"]
    write_json(exp_dir / RESULTS_NAME, results)
    rows = [record_row(r) for r in state.candidates.values()]
    write_csv(exp_dir / "candidates.csv", rows)
    write_search_plots(results, rows, exp_dir)
    return results


def record_row(record: Any) -> dict[str, Any]:
    """One CSV row per candidate: widths, accuracy, latency and ratios, flat."""
    row = {
        "id": record.id,
        "parent": record.parent,
        "level": record.level,
        "move": record.move,
        "status": record.status,
        "ctc_loss": record.ctc_loss,
        "wer_greedy": record.wer_greedy,
        "wer": record.wer,
        "macs_per_second": round(record.macs_per_second),
    }
    row.update({f"width_{g}": w for g, w in record.widths.items()})
    row.update(record.latency or {})
    row.update({f"ratio_{k}": v for k, v in record.ratios.items()})
    row.update(
        {
            f"decoder_{k}": v
            for k, v in record.decoder.items()
            if k in ("backend", "beam_threshold", "cutoff_prob")
        }
    )
    return row
