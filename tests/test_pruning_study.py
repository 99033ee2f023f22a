"""The study on the tiny corpus: decoder tuning, every model x decoder measured, results, plots, report."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest
import torch

from asr.checkpoint import load_model
from asr.inference import encode_each, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from asr.models.lstm_ctc import count_parameters
from common.errors import SpeechpruneError
from decoding.backends import DecoderSettings, make_decoder
from decoding.entropy import entropy_report
from pruning.job import prune
from speechprune.cli import main
from speechprune.study.models import collect_models
from speechprune.study.plots import pareto_front
from speechprune.study.report import read_results, write_report, write_results
from speechprune.study.rows import StudyRow
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


@pytest.mark.slow
def test_study_measures_every_model_with_every_decoder(tiny_corpus, base_model, pruning_run, tmp_path):
    threads = torch.get_num_threads()
    try:
        _study_measures_every_model_with_every_decoder(tiny_corpus, base_model, pruning_run, tmp_path)
    finally:
        torch.set_num_threads(threads)  # run_study leaves the process at its first thread count


def _study_measures_every_model_with_every_decoder(tiny_corpus, base_model, pruning_run, tmp_path):
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
    study_rows, retuned = run_study(
        models,
        tiny_corpus["test"],
        specs,
        decode_limit=6,
        repeats=1,
        threads=(1,),
        greedy_manifests=[tiny_corpus["test_speaker"]],
        retune_manifest=tiny_corpus["valid"],
    )
    check_retuned(study_rows, retuned, models, specs, tmp_path / "retuned_report")
    fixed = [r for r in study_rows if r.decoder in specs]
    check_study(fixed, models, specs, tiny_corpus, tmp_path)


def check_retuned(study_rows, retuned, models, specs, out: Path) -> None:
    """+thr and +T rows for every beam-search configuration, each model within its own WER with the
    fixed settings on validation speech, settings as the rows ran."""
    names = {f"{spec}+{lever}" for spec in specs for lever in ("thr", "T")}
    assert set(retuned) == names
    assert {r.decoder for r in study_rows} == set(specs) | names
    for name, choice in retuned.items():
        assert choice["tolerance"] == 0.0
        for label, chosen in choice["models"].items():
            assert chosen["validation_wer"] <= chosen["fixed_validation_wer"] + 1e-9, (name, label)
            assert chosen["decoder_ms"] <= chosen["fixed_decoder_ms"]  # the fixed point is in the grid
            row = next(r for r in study_rows if r.decoder == name and r.model == label)
            assert (row.beam_threshold, row.temperature) == (chosen["beam_threshold"], chosen["temperature"])
            if name.endswith("+thr"):
                assert row.temperature == 1.0
            else:
                assert row.beam_threshold == specs[name.removesuffix("+T")][1].beam_threshold
    paths = write_report(study_rows, out)
    assert out / "levers_decoder_time_vs_wer.png" in paths
    assert (out / "levers_decoder_time_vs_wer.png").read_bytes()[:4] == b"\x89PNG"


def check_study(study_rows, models, specs, tiny_corpus, tmp_path: Path) -> None:
    """Every column of the study's rows against what the models, decoders and timings give."""
    assert len(study_rows) == 12
    assert [(r.model, r.decoder) for r in study_rows] == [(m.label, d) for d in specs for m in models]
    rows = [r.to_flat() for r in study_rows]
    by_model = {r["model"]: r for r in rows if r["decoder"] == "own"}

    # model columns: what the model files say
    for study_model in models:
        row, encoder = by_model[study_model.label], load_model(study_model.path).recognizer.encoder
        assert row["parameters"] == count_parameters(encoder)
        assert row["lstm_sparsity"] == pytest.approx(study_model.target_sparsity)
        assert row["target_sparsity"] == study_model.target_sparsity
    assert [by_model[m.label]["encoder_shape"] for m in models] == [
        "conv8-8_lstm48_bi",
        "conv8-8_lstm36_bi",
        "conv8-8_lstm24_bi",
    ]
    macs = [by_model[m.label]["macs_per_second"] for m in models]
    assert macs[0] > macs[1] > macs[2] > 0
    assert by_model["mnp-ent1-s50"]["mac_reduction"] == pytest.approx(macs[0] / macs[2], abs=1e-4)
    assert by_model["unpruned"]["regularizer"] == "none" and by_model["mnp-ent1-s50"]["regularizer"] == (
        "frame_entropy"
    )

    # accuracy: each row's WERs are those of its model's texts with its decoder on the same 6 utterances
    audio = load_evaluation_audio(tiny_corpus["test"], 8000, 6)
    assert all(r["utterances"] == 6 for r in rows)
    assert all(
        r["audio_seconds_mean"] == pytest.approx(statistics.fmean(audio.audio_seconds), abs=1e-4)
        for r in rows
    )
    torch.set_num_threads(1)  # the study's encoding thread count: the same emissions bit for bit
    for study_model in models:
        loaded = load_model(study_model.path)
        log_probs, lengths = stack_emissions(encode_each(loaded.recognizer, audio.waveforms))
        greedy = make_decoder("greedy", loaded.tokenizer)(log_probs, lengths)
        greedy_wer = round(error_counts(audio.references, [g.text for g in greedy]).wer, 5)
        entropy = entropy_report(log_probs, lengths, blank_id=loaded.tokenizer.blank_id)
        for spec_name, (backend, spec) in specs.items():
            row = next(r for r in rows if r["model"] == study_model.label and r["decoder"] == spec_name)
            texts = [r.text for r in make_decoder(backend, loaded.tokenizer, spec)(log_probs, lengths)]
            where = (row["model"], spec_name)
            assert row["wer"] == round(error_counts(audio.references, texts).wer, 5), where
            assert row["wer_greedy"] == greedy_wer, where
            assert row["entropy_mean"] == pytest.approx(entropy["entropy_mean"], abs=1e-5)
    # the piece LM of the training transcripts helps the (weak, 8-epoch) baseline: 1.0 -> 0.73 / 0.55
    unpruned = {r["decoder"]: r["wer"] for r in rows if r["model"] == "unpruned"}
    assert unpruned["own+lm"] < unpruned["own"] and unpruned["flashlight+lm"] < unpruned["flashlight"]
    # greedy WER on the whole extra manifest (the study encodes it batched, here one by one)
    extra = load_evaluation_audio(tiny_corpus["test_speaker"], 8000)
    for study_model in models:
        loaded = load_model(study_model.path)
        emissions = stack_emissions(encode_each(loaded.recognizer, extra.waveforms))
        texts = [g.text for g in make_decoder("greedy", loaded.tokenizer)(*emissions)]
        expected = round(error_counts(extra.references, texts).wer, 5)
        measured = [r["wer_greedy_test_speaker"] for r in rows if r["model"] == study_model.label]
        assert measured == [expected] * len(specs)

    # timing columns: derived consistently from the measured decoder and per-model encoder times
    for row in rows:
        base = next(r for r in rows if r["model"] == "unpruned" and r["decoder"] == row["decoder"])
        model_rows = [r for r in rows if r["model"] == row["model"]]
        assert row["decoder_ms"] > 0 and row["encoder_ms_1t"] > 0
        assert row["encoder_ms_1t"] == row["encoder_ms_1t_model"]  # every model has a shape of its own
        assert len({r["encoder_ms_1t"] for r in model_rows}) == 1  # the encoder is timed once per model
        assert row["end_to_end_ms_1t"] == pytest.approx(row["encoder_ms_1t"] + row["decoder_ms"], abs=1e-3)
        assert row["rtf_1t"] == pytest.approx(
            row["end_to_end_ms_1t"] / 1000 / row["audio_seconds_mean"], rel=1e-3
        )
        assert row["decoder_slowdown"] == pytest.approx(row["decoder_ms"] / base["decoder_ms"], abs=1e-4)
        assert row["encoder_speedup_1t"] == pytest.approx(
            base["encoder_ms_1t"] / row["encoder_ms_1t"], abs=1e-4
        )
        assert ("extensions_per_frame" in row) == row["decoder"].startswith("own")
        if row["decoder"] == "own":
            assert row["extensions_per_frame"] > 0 and row["lm_queries_per_utterance"] == 0
        if row["decoder"] == "own+lm":
            assert row["lm_queries_per_utterance"] > 0
    assert [r["decoder_slowdown"] for r in rows if r["model"] == "unpruned"] == [1.0] * 4

    # results.json -> `speechprune report` gives the report drawn from the rows in memory
    assert all(StudyRow.from_flat(row.to_flat()) == row for row in study_rows)
    out, redrawn = tmp_path / "study", tmp_path / "redrawn"
    write_results(study_rows, out)
    write_report(study_rows, out)
    assert read_results(out) == study_rows
    redrawn.mkdir()
    shutil.copy(out / "results.json", redrawn / "results.json")
    assert main(["report", str(redrawn)]) == 0
    for name in ("decoder_time_vs_sparsity", "pareto_wer_latency", "latency_breakdown", "entropy_vs_search"):
        assert (redrawn / f"{name}.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert (redrawn / "summary.md").read_text() == summary
    assert summary.count("### decoder: ") == 4 and "### decoder: own+lm" in summary
    unpruned_own = next(
        line for line in summary.split("### decoder: own\n")[1].splitlines() if "unpruned" in line
    )
    assert f"{100 * by_model['unpruned']['wer']:.2f}%" in unpruned_own
    assert "mnp-ent1-s50" in summary


def test_a_study_runs_every_model_on_torch_and_its_onnx_exports(
    tiny_corpus, base_model, pruning_run, tmp_path
):
    """int8 rows beside the torch ones: the exported float32 model decodes like torch, int8 close to it;
    ratios stay relative to the unpruned torch model; encoder times pool per (shape, runtime)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is part of the dev extra")
    snapshot = next((pruning_run / "snapshots").glob("*.pt"))
    models = collect_models(base_model, [pruning_run], [snapshot], runtimes=["torch", "onnx", "onnx-int8"])
    labels = [m.label for m in models]
    assert labels[:4] == ["unpruned", "mnp-ent1-s25", "mnp-ent1-s50", snapshot.stem]
    assert labels[4] == "unpruned@onnx" and labels[-1] == f"{snapshot.stem}@onnx-int8" and len(labels) == 12
    specs = {"own": ("own", DecoderSettings(beam_width=4, beam_threshold=8.0))}
    threads = torch.get_num_threads()
    try:
        rows = {
            r.model: r
            for r in run_study(models, tiny_corpus["test"], specs, decode_limit=6, repeats=1, threads=(1,))[0]
        }
    finally:
        torch.set_num_threads(threads)
    for label in ("unpruned", "mnp-ent1-s50"):
        torch_row, fp32, int8 = rows[label], rows[f"{label}@onnx"], rows[f"{label}@onnx-int8"]
        assert fp32.wer == torch_row.wer and abs(int8.wer - torch_row.wer) <= 0.1  # 6 short utterances
        assert (
            fp32.runtime == "onnx"
            and int8.runtime == "onnx-int8"
            and int8.encoder_shape == torch_row.encoder_shape
        )
        assert int8.search["extensions_per_frame"] > 0 and int8.encoder_ms[1] > 0
        assert int8.encoder_speedup[1] == pytest.approx(
            rows["unpruned"].encoder_ms[1] / int8.encoder_ms[1], abs=1e-4
        )
    assert rows["unpruned"].is_reference and not rows["unpruned@onnx-int8"].is_reference
    assert rows["unpruned@onnx"].decoder_slowdown == pytest.approx(
        rows["unpruned@onnx"].decoder_ms / rows["unpruned"].decoder_ms, abs=1e-4
    )
    write_report(list(rows.values()), tmp_path / "report")
    assert "unpruned@onnx-int8" in (tmp_path / "report" / "summary.md").read_text()
    with pytest.raises(SpeechpruneError, match="choose from"):
        collect_models(base_model, [], runtimes=["tflite"])


def test_report_names_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_pareto_front():
    points = [(10.0, 5.0), (8.0, 6.0), (12.0, 4.0), (9.0, 7.0), (11.0, 5.5)]
    assert pareto_front(points) == [(8.0, 6.0), (10.0, 5.0), (12.0, 4.0)]


def test_the_cheapest_setting_within_the_wer_budget_is_chosen():
    from decoding.backends import DecoderSettings
    from speechprune.study.tuning import GridPoint, cheapest_within, temperature_grid, threshold_grid

    base = DecoderSettings(beam_threshold=10.0)
    assert [s.beam_threshold for s in threshold_grid(base)] == [10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0]
    assert [s.temperature for s in temperature_grid(base)] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert all(s.beam_threshold == 10.0 for s in temperature_grid(base))
    points = [GridPoint(base, 0.02, 1.0), GridPoint(base, 0.02, 0.5), GridPoint(base, 0.05, 0.1)]
    assert cheapest_within(points, 0.02) is points[1]  # the faster one at the same WER, not the fastest
    assert cheapest_within(points, 0.01) is None


def test_runs_repeated_with_other_seeds_are_told_apart_and_the_same_seed_twice_is_refused(
    base_model, pruning_run, tmp_path
):
    import json

    summary = json.loads((pruning_run / "prune_summary.json").read_text())
    assert summary["seed"] == 3  # the config's seed, as the run used it
    again = tmp_path / "seed4"
    shutil.copytree(pruning_run, again)
    (again / "prune_summary.json").write_text(json.dumps({**summary, "seed": 4}))
    labels = [m.label for m in collect_models(base_model, [pruning_run, again])]
    assert labels == [
        "unpruned",
        "mnp-ent1-s25-seed3",
        "mnp-ent1-s50-seed3",
        "mnp-ent1-s25-seed4",
        "mnp-ent1-s50-seed4",
    ]
    assert [m.label for m in collect_models(base_model, [again])][1] == "mnp-ent1-s25"  # alone: short
    halves = collect_models(base_model, [pruning_run, again], sparsities=[0.5])
    assert [m.label for m in halves] == ["unpruned", "mnp-ent1-s50-seed3", "mnp-ent1-s50-seed4"]
    with pytest.raises(SpeechpruneError, match=r"no snapshot at --sparsities \[0.7\] \(it has 0.25, 0.5\)"):
        collect_models(base_model, [pruning_run], sparsities=[0.7])
    with pytest.raises(SpeechpruneError, match="labelled alike"):
        collect_models(base_model, [pruning_run, pruning_run])


def _swept_row(model: str, decoder: str, decoder_ms: float, wer: float, weight: float, seed: int | None):
    """A measured row as the study writes it, with only what the seed summary and the sweep plot read."""
    return StudyRow(
        model=model,
        method="unpruned" if seed is None else "mnp",
        regularizer="none" if weight == 0 else "frame_entropy",
        regularizer_weight=weight,
        target_sparsity=0.0 if seed is None else 0.5,
        lstm_sparsity=0.0 if seed is None else 0.5,
        parameters=1000,
        encoder_shape="conv8_lstm24_bi",
        macs_per_second=10_000,
        decoder=decoder,
        utterances=10,
        wer=wer,
        wer_greedy=wer,
        entropy_mean=0.02,
        entropy_nonblank_mean=0.1,
        tokens_for_95pct_mean=1.1,
        decoder_ms=decoder_ms,
        decoder_ms_p90=decoder_ms,
        audio_seconds_mean=2.0,
        encoder_ms_model={1: 5.0},
        beam_threshold=10.0 if decoder == "flashlight-wide" else 4.0,
        temperature=0.5 if decoder.endswith("+T") else 1.0,
        seed=seed,
    )


def test_repeated_runs_are_summarized_over_seeds_against_the_unpruned_fixed_decoder(tmp_path):
    from speechprune.study.report import markdown_over_seeds, over_seeds
    from speechprune.study.rows import derive, fixed_configuration

    # a re-tuned row compares with its own configuration, LM and all, not with the first name part
    assert fixed_configuration("flashlight+lm+thr") == "flashlight+lm"
    assert fixed_configuration("flashlight+lm") == "flashlight+lm"
    assert fixed_configuration("own-wide+T") == "own-wide"

    rows = [
        _swept_row("unpruned", d, 2.0 if d == "flashlight-wide" else 0.5, 0.01, 0, None)
        for d in ("flashlight-wide", "flashlight-wide+T")
    ]
    times = {0: (2.8, 2.6), 1: (2.4, 2.2), 3: (2.1, 2.1), 10: (1.9, 1.7)}  # seed 1, seed 2
    for weight, pair in times.items():
        for seed, ms in zip((1, 2), pair, strict=True):
            label = f"mnp-{weight}-seed{seed}"
            rows.append(_swept_row(label, "flashlight-wide", ms, 0.01 * seed, weight, seed))
            rows.append(_swept_row(label, "flashlight-wide+T", ms / 4, 0.01 * seed, weight, seed))
    rows.append(_swept_row("mnp-once", "flashlight-wide", 9.0, 0.1, 30, 1))  # one seed: no summary
    records = over_seeds(derive(rows))
    assert len(records) == 8  # four weights x two configurations; unpruned and the lone run left out
    fixed10 = next(r for r in records if r["decoder"] == "flashlight-wide" and r["regularizer_weight"] == 10)
    assert fixed10["seeds"] == "1 2"
    assert fixed10["decoder_ms_mean"] == pytest.approx(1.8) and fixed10["decoder_ms_spread"] == pytest.approx(
        0.1
    )
    assert fixed10["decoder_vs_unpruned_fixed_mean"] == pytest.approx(0.9)
    assert fixed10["wer_mean"] == pytest.approx(0.015) and fixed10["wer_spread"] == pytest.approx(0.005)
    sharpened = next(
        r for r in records if r["decoder"] == "flashlight-wide+T" and r["regularizer_weight"] == 10
    )
    # +T rows on the unpruned model's *fixed* scale (its own +T row is 0.5 ms, not the reference)
    assert sharpened["decoder_vs_unpruned_fixed_mean"] == pytest.approx(0.225)
    assert sharpened["temperatures"] == "0.5 0.5"
    table = markdown_over_seeds(records)
    assert (
        "| flashlight-wide | mnp, frame_entropy λ=10 | 50% | 1 2 | 1.50 ± 0.50% "
        "| 1.800 ± 0.100 | 0.900 ± 0.050 |" in table
    )

    paths = write_report(rows, tmp_path)
    assert tmp_path / "weight_sweep.png" in paths and tmp_path / "seeds.csv" in paths
    assert (tmp_path / "weight_sweep.png").stat().st_size > 10_000
    assert "over seeds" in (tmp_path / "summary.md").read_text()
    single_weight = [r for r in rows if r.regularizer_weight in (0, 1)]
    assert tmp_path / "other" / "weight_sweep.png" not in write_report(single_weight, tmp_path / "other")
