"""The study on the tiny corpus: decoder tuning, every model x decoder measured, results, plots, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruning.job import prune
from speechprune.cli import main
from speechprune.study.models import collect_models
from speechprune.study.plots import pareto_front
from speechprune.study.run import run_study
from speechprune.study.tuning import decoder_specs, tune_decoders
from tests.conftest import prune_config


@pytest.fixture(scope="module")
def pruning_run(tiny_corpus, base_model, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("study_run")
    config = prune_config(tiny_corpus)
    config["regularizer"] = {"weight": 1.0}
    prune(config, base_model, run)
    return run


def test_tuned_decoder_settings_keep_the_widest_searchs_wer(tiny_corpus, base_model):
    tuned = tune_decoders(base_model, tiny_corpus["valid"], beam_width=4, limit=8, thresholds=(None, 3.0))
    for backend in ("own", "flashlight"):
        trials = tuned["trials"][backend]
        chosen = next(t for t in trials if t["settings"] == tuned["chosen"][backend])
        assert chosen["wer"] <= trials[0]["wer"]
    own = tuned["trials"]["own"]
    assert len(own) == 8 and all("extensions_per_frame" in t for t in own)
    chosen_own = next(t for t in own if t["settings"] == tuned["chosen"]["own"])
    assert chosen_own["extensions_per_frame"] == min(
        t["extensions_per_frame"] for t in own if t["wer"] <= own[0]["wer"]
    )


def test_study_measures_every_model_with_every_decoder(tiny_corpus, base_model, pruning_run, tmp_path):
    lm = tmp_path / "lm.arpa"
    assert (
        main(
            [
                "build-lm",
                str(tiny_corpus["train"]),
                "--unit",
                "piece",
                "--model",
                str(base_model),
                "--out",
                str(lm),
            ]
        )
        == 0
    )
    models = collect_models(base_model, [pruning_run])
    assert [m.label for m in models] == ["unpruned", "mnp-ent1-s25", "mnp-ent1-s50"]
    settings = {"own": {"beam_width": 4, "beam_threshold": 8.0}, "flashlight": {"beam_width": 4}}
    specs = decoder_specs(settings, lm, alpha=0.5, beta=0.0, wide_threshold=12.0)
    assert specs["own-wide"][1].beam_threshold == 12.0 and specs["own-wide"][1].cutoff_prob == 1.0
    del specs["own-wide"], specs["flashlight-wide"]
    assert set(specs) == {"own", "own+lm", "flashlight", "flashlight+lm"}
    rows = run_study(
        models,
        tiny_corpus["test"],
        specs,
        decode_limit=6,
        repeats=1,
        threads=(1,),
        greedy_manifests=[tiny_corpus["test_speaker"]],
    )
    assert len(rows) == 12
    rows = [r.to_flat() for r in rows]
    by_model = {r["model"]: r for r in rows if r["decoder"] == "own"}
    assert by_model["mnp-ent1-s50"]["parameters"] < by_model["unpruned"]["parameters"]
    assert by_model["mnp-ent1-s50"]["macs_per_second"] < by_model["unpruned"]["macs_per_second"]
    assert by_model["mnp-ent1-s50"]["lstm_sparsity"] == pytest.approx(0.5)
    for row in rows:
        assert row["decoder_ms"] > 0 and row["encoder_ms_1t"] > 0
        assert row["end_to_end_ms_1t"] == pytest.approx(row["encoder_ms_1t"] + row["decoder_ms"], abs=1e-3)
        assert 0 <= row["wer"] and "wer_greedy_test_speaker" in row
        assert ("extensions_per_frame" in row) == row["decoder"].startswith("own")
    lm_rows = [r for r in rows if r["decoder"] == "own+lm"]
    assert all(r["lm_queries_per_utterance"] > 0 for r in lm_rows)

    out = tmp_path / "study"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(rows))
    assert main(["report", str(out)]) == 0
    for name in ("decoder_time_vs_sparsity", "pareto_wer_latency", "latency_breakdown", "entropy_vs_search"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "### decoder: own+lm" in summary and "mnp-ent1-s50" in summary


def test_report_names_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_pareto_front():
    points = [(10.0, 5.0), (8.0, 6.0), (12.0, 4.0), (9.0, 7.0), (11.0, 5.5)]
    assert pareto_front(points) == [(8.0, 6.0), (10.0, 5.0), (12.0, 4.0)]
