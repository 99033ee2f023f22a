"""The latency search: budgets, the tree on a tiny model with a fake deterministic target, resuming after
a kill, unreachable budgets, co-tuning, core pinning, and the CLI end to end with the real local target."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import yaml

from asr.checkpoint import load_model
from asr.inference import encode_each, load_evaluation_audio, stack_emissions
from common.errors import SpeechpruneError
from decoding.backends import make_decoder
from pruning.cost import encoder_macs_per_second
from speechprune.cli import main
from speechprune.search.config import Budget, SearchConfig
from speechprune.search.job import run_search
from speechprune.search.state import STATE_NAME
from speechprune.search.targets import Latency, LatencyTarget, Measured, TimingJob, pinned_to
from speechprune.search.tree import is_landing, trade_off
from tests.conftest import tiny_config


class MacsTarget(LatencyTarget):
    """A fast, deterministic stand-in for a device: encoder ms from MACs; decoder ms grows as the LSTM
    narrows (as flatter outputs make the search work harder). Decoded results come from greedy decoding
    of the job's model on the calibration audio, so WERs are real."""

    def __init__(self, manifest: Path, limit: int) -> None:
        self.manifest, self.limit = manifest, limit
        self.calls = 0

    def describe(self) -> dict:
        return {"kind": "fake-macs"}

    def measure(self, jobs: Mapping[str, TimingJob]) -> dict[str, Measured]:
        self.calls += 1
        measured = {}
        for name, job in jobs.items():
            model = load_model(job.model_path)
            audio = load_evaluation_audio(self.manifest, model.recognizer.sample_rate, self.limit)
            emissions = encode_each(model.recognizer, audio.waveforms)
            texts = [r.text for r in make_decoder("greedy", model.tokenizer)(*stack_emissions(emissions))]
            encoder = model.recognizer.encoder
            macs = encoder_macs_per_second(encoder, model.recognizer.features.config)
            decoder_ms = 0.4 * 48 / sum(encoder.config.lstm_hidden)
            mean_seconds = sum(audio.audio_seconds) / len(audio.audio_seconds)
            measured[name] = Measured(Latency(macs / 1e6, decoder_ms, mean_seconds), texts)
        return measured


def search_config(corpus: dict[str, Path], **search) -> dict:
    config = tiny_config(corpus, epochs=1)
    for section in ("tokenizer", "features", "model"):  # the model file describes itself
        del config[section]
    config["trainer"].pop("max_epochs")
    config["trainer"].pop("log_every_n_steps")
    config["optim"] = {"lr": 0.003, "warmup_fraction": 0.1}
    config["search"] = {
        "objective": "end_to_end",
        "budgets": [0.9, 0.75],
        "groups": ["lstm", "conv"],
        "step": 0.25,
        "min_units": 2,
        "width": 1,
        "max_depth": 2,
        "finetune_batches": 2,
        "final_finetune_batches": 2,
        "calibration_manifest": str(corpus["valid"]),
        "calibration_limit": 6,
        **search,
    }
    config["decoder"] = {"backend": "greedy"}
    config["target"] = {"threads": 1, "repeats": 1, "warmup": 0}
    return config


def test_budgets_parse_fractions_percentages_and_milliseconds_per_second():
    assert Budget.parse("0.45") == Budget(0.45) and Budget.parse("45%") == Budget(0.45)
    assert Budget.parse("40ms/s") == Budget(40.0, "ms_per_second")
    for bad in ("fast", "0", "1.2", "-3ms/s", "nan"):
        with pytest.raises(SpeechpruneError, match="budgets"):
            Budget.parse(bad)
    config = SearchConfig(calibration_manifest="x.jsonl", budgets=["35%", 0.6, "45%"])
    assert [b.value for b in config.parsed_budgets()] == [0.6, 0.45, 0.35]  # loosest first
    with pytest.raises(SpeechpruneError, match="macs"):
        SearchConfig(calibration_manifest="x", objective="macs", budgets=["40ms/s"]).parsed_budgets()
    with pytest.raises(ValueError, match="objective"):
        SearchConfig(calibration_manifest="x", objective="speed")


def test_trade_off_ranks_free_moves_by_saving_and_costly_ones_by_loss_per_saving():
    moves = {
        "free-small": (-0.02, 0.01),
        "free-large": (-0.01, 0.10),
        "cheap": (0.01, 0.10),
        "dear": (0.05, 0.10),
        "useless": (-0.05, 0.0),
    }
    ranked = sorted(moves, key=lambda name: trade_off(*moves[name]))
    assert ranked == ["free-large", "free-small", "cheap", "dear", "useless"]


def _tree(exp: Path) -> dict:
    state = json.loads((exp / STATE_NAME).read_text())
    return {
        "levels": state["levels"],
        "widths": {cid: c["widths"] for cid, c in state["candidates"].items()},
        "ctc_loss": {cid: c["ctc_loss"] for cid, c in state["candidates"].items()},
    }


@pytest.fixture(scope="module")
def searched(tiny_corpus, base_model, tmp_path_factory):
    exp = tmp_path_factory.mktemp("search")
    target = MacsTarget(tiny_corpus["valid"], 6)
    config = search_config(tiny_corpus, uniform_sparsities=[0.25, 0.5], final_checks=2)
    results = run_search(config, base_model, exp, [tiny_corpus["test"]], target=target, progress=False)
    return exp, results


def test_search_grows_a_tree_of_one_layer_moves_and_keeps_the_best_trade(searched, base_model):
    exp, results = searched
    state = json.loads((exp / STATE_NAME).read_text())
    candidates = state["candidates"]
    base_widths = candidates["root"]["widths"]
    assert base_widths == {"conv.0": 8, "conv.1": 8, "lstm.0": 48}
    assert len(state["levels"]) >= 1 and all(len(level) == 1 for level in state["levels"])  # width 1
    for cid, record in candidates.items():
        if cid == "root":
            continue
        if cid.startswith("uniform-s"):  # the baseline: LSTM units only, the same fraction of every layer
            kept = {"uniform-s25": 36, "uniform-s50": 24}[cid]
            assert record["widths"] == {**base_widths, "lstm.0": kept} and record["status"] == "measured"
            continue
        parent = candidates[record["parent"]]
        changed = {g for g in base_widths if record["widths"][g] != parent["widths"][g]}
        assert changed == {record["move"]}  # one group per move
        step = {"conv.0": 2, "conv.1": 2, "lstm.0": 12}[record["move"]]  # 25% of the original units
        step = min(step, parent["widths"][record["move"]] - 2)  # a last move stops at min_units
        removed = parent["widths"][record["move"]] - record["widths"][record["move"]]
        if is_landing(cid):  # a retried move landing under a budget: fewer units than a step
            assert 1 <= removed < step and cid.endswith(f"-{removed}u")
        else:
            assert removed == step
        assert record["status"] == "measured" and (exp / record["model"]).is_file()
        assert load_model(exp / record["model"]).recognizer.encoder.config.lstm_hidden == [
            record["widths"]["lstm.0"]
        ]
    # the kept child of each level is the one with the least loss per latency saved
    for level, kept in enumerate(state["levels"], start=1):
        siblings = [c for c in candidates.values() if c["level"] == level and c["parent"] is not None]
        siblings = [c for c in siblings if not c["id"].startswith("uniform-s") and not is_landing(c["id"])]
        parent = candidates[siblings[0]["parent"]]

        def trade(c, parent=parent):
            saved = parent["ratios"]["end_to_end"] - c["ratios"]["end_to_end"]
            return (*trade_off(c["ctc_loss"] - parent["ctc_loss"], saved), c["ratios"]["end_to_end"])

        assert kept == [min(siblings, key=trade)["id"]]
    # every met budget has a final model, re-measured, whose objective fits
    outcomes = [(f["method"], f["budget"]) for f in results["finals"]]
    outcomes += [(u["method"], u["budget"]) for u in results["unmet_budgets"]]
    assert sorted(outcomes) == [(m, b) for m in ("search", "uniform") for b in ("75pct", "90pct")]
    for final in results["finals"]:
        assert (exp / final["model"]).is_file()
        assert final["objective_ratio_to_budget"] <= 1.0 + 1e-6  # the fake target is exact
        assert final["end_to_end_ratio"] == pytest.approx(final["search_ratios"]["end_to_end"], abs=1e-3)
        assert 0.0 <= final["test_wer"]["test"] <= 1.0 and "test" in final["test_wer_greedy"]
    assert results["noise_floor"]["copy_end_to_end_ratio"] == pytest.approx(1.0)
    # the final check ran twice (two separate measurements): each final's ratio is their median
    assert results["noise_floor"]["checks"] == 2
    for final in results["finals"]:
        checks = final["end_to_end_ratio_checks"]
        assert len(checks) == 2 and final["end_to_end_ratio"] == pytest.approx(sum(checks) / 2, abs=1e-4)
    for name in ("search_results.json", "candidates.csv", "search_candidates.png", "search_breakdown.png"):
        assert (exp / name).stat().st_size > 100


def test_a_killed_search_resumes_to_the_same_tree(tiny_corpus, base_model, searched, tmp_path):
    exp_full, _ = searched
    exp = tmp_path / "killed"
    config = search_config(tiny_corpus, uniform_sparsities=[0.25, 0.5])  # as the uninterrupted run
    calls = {"n": 0}

    import speechprune.search.finetune as finetune

    original = finetune.FineTuner.__call__

    def dies_on_the_fourth(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as a kill between two candidates' fine-tunes
        return original(self, *args)

    finetune.FineTuner.__call__ = dies_on_the_fourth
    try:
        with pytest.raises(KeyboardInterrupt):
            run_search(config, base_model, exp, target=MacsTarget(tiny_corpus["valid"], 6), progress=False)
    finally:
        finetune.FineTuner.__call__ = original
    interrupted = json.loads((exp / STATE_NAME).read_text())
    assert (
        not interrupted["finished"]
        and 1 <= len(interrupted["candidates"]) - 1 < len(_tree(exp_full)["widths"]) - 1
    )
    run_search(config, base_model, exp, target=MacsTarget(tiny_corpus["valid"], 6), progress=False)
    resumed, full = _tree(exp), _tree(exp_full)
    assert resumed["levels"] == full["levels"] and resumed["widths"] == full["widths"]
    assert resumed["ctc_loss"] == pytest.approx(full["ctc_loss"])


def test_a_changed_config_is_not_resumed_into_an_old_tree(tiny_corpus, base_model, searched):
    exp, _ = searched
    config = search_config(tiny_corpus, step=0.5)
    with pytest.raises(SpeechpruneError, match="different config"):
        run_search(config, base_model, exp, target=MacsTarget(tiny_corpus["valid"], 6), progress=False)


def test_an_unreachable_budget_names_the_closest_candidate(tiny_corpus, base_model, tmp_path, capsys):
    config = search_config(tiny_corpus, budgets=["1%"], max_depth=1, final_finetune_batches=0)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    status = main(["search", str(base_model), "--config", str(path), "--exp-dir", str(tmp_path / "exp")])
    err = capsys.readouterr().err
    assert status == 1
    assert "budget 1pct not reached by search; closest candidate" in err and "max_depth" in err
    results = json.loads((tmp_path / "exp" / "search_results.json").read_text())
    unmet = results["unmet_budgets"][0]
    state = json.loads((tmp_path / "exp" / STATE_NAME).read_text())
    ratios = {cid: c["ratios"]["end_to_end"] for cid, c in state["candidates"].items() if cid != "root"}
    assert unmet["closest"] == min(ratios, key=ratios.get)
    assert results["finals"] == [] and results["target"]["kind"] == "local"  # the real local target ran
    assert results["unpruned"]["encoder_ms"] > 0 and results["unpruned"]["decoder_ms"] > 0


def test_the_last_move_of_a_layer_takes_what_is_left_above_min_units(tiny_corpus, base_model, tmp_path):
    config = search_config(
        tiny_corpus, groups=["lstm"], min_units=30, budgets=["1%"], max_depth=4, final_finetune_batches=0
    )
    run_search(config, base_model, tmp_path, target=MacsTarget(tiny_corpus["valid"], 6), progress=False)
    state = json.loads((tmp_path / STATE_NAME).read_text())
    path = [state["candidates"][level[0]]["widths"]["lstm.0"] for level in state["levels"]]
    assert path == [36, 30]  # 48 - 12, then the 6 units left above min_units instead of no move at all
    assert state["stop_reason"].startswith("no move left")


def test_co_tuning_keeps_wer_within_tolerance(tiny_corpus, base_model, tmp_path):
    config = search_config(tiny_corpus, co_tune=True, max_depth=1, wer_tolerance=0.0)
    config["decoder"] = {"backend": "own", "beam_width": 4, "cutoff_top_n": 64}
    run_search(config, base_model, tmp_path, target=MacsTarget(tiny_corpus["valid"], 6), progress=False)
    state = json.loads((tmp_path / STATE_NAME).read_text())
    for cid, record in state["candidates"].items():
        if cid == "root":
            assert record["decoder"]["beam_threshold"] is None and record["decoder"]["cutoff_prob"] == 1.0
            continue
        tuned = record["decoder"]
        assert tuned["beam_width"] == 4  # only thresholds, cutoffs and the temperature are co-tuned
        assert tuned["temperature"] in (1.0, 0.8, 0.6)
        assert tuned["beam_threshold"] is None or tuned["beam_threshold"] <= 10.0


def test_bad_search_configs_are_one_line_errors(tiny_corpus, base_model, tmp_path, capsys):
    config = search_config(tiny_corpus)
    config["target"]["speed"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(base_model), "--config", str(path), "--exp-dir", str(tmp_path / "e")]) == 2
    assert "target" in capsys.readouterr().err
    config = search_config(tiny_corpus, calibration_manifest=str(tmp_path / "missing.jsonl"))
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(base_model), "--config", str(path), "--exp-dir", str(tmp_path / "e")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_pinning_to_a_core_is_undone_afterwards():
    before = os.sched_getaffinity(0)
    with pinned_to([min(before)]):
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before


def _level_one(exp: Path) -> tuple[dict, dict]:
    """The kept child of level 1 and the root, from a search folder's state."""
    state = json.loads((exp / STATE_NAME).read_text())
    return state["candidates"][state["levels"][0][0]], state["candidates"]["root"]


def test_a_crossed_budget_is_landed_on_and_fine_tunes_are_cached(
    tiny_corpus, base_model, searched, tmp_path, monkeypatch
):
    from speechprune.search.tree import LANDING_BAND, is_landing

    child, _ = _level_one(searched[0])
    # the first move overshoots it by far; not half-way, where removing half the move's units lands
    # exactly on the budget, a tie that rounding decides
    budget = round(1.0 - 0.4 * (1.0 - child["ratios"]["end_to_end"]), 4)
    assert child["ratios"]["end_to_end"] < budget * (1 - LANDING_BAND)
    cache = tmp_path / "cache"
    config = search_config(
        tiny_corpus, budgets=[budget], max_depth=1, finetune_cache=str(cache), final_finetune_batches=0
    )
    results = run_search(
        config, base_model, tmp_path / "a", target=MacsTarget(tiny_corpus["valid"], 6), progress=False
    )
    state = json.loads((tmp_path / "a" / STATE_NAME).read_text())
    landing = {cid: c for cid, c in state["candidates"].items() if is_landing(cid)}
    assert 1 <= len(landing) <= 2  # LANDING_TRIES
    for cid, record in landing.items():
        parent = state["candidates"][record["parent"]]
        removed = parent["widths"][record["move"]] - record["widths"][record["move"]]
        assert cid.endswith(f"{record['move']}-{removed}u") and removed >= 1
    # the landing candidates retry the most accurate move that crossed the budget with fewer units, and
    # one of them lies under the budget, closer to it than that move; the budget's model is the most
    # accurate candidate under the budget (on this tiny model that may be the whole move: which of two
    # 2-batch fine-tunes comes out ahead is noise, and depends on the thread count)
    level_one = [c for c in state["candidates"].values() if c["level"] == 1]
    under = [c for c in level_one if c["ratios"]["end_to_end"] <= budget]
    crossing = [c for c in under if not is_landing(c["id"])]
    retried = min(crossing, key=lambda c: c["ctc_loss"])
    assert {c["move"] for c in landing.values()} == {retried["move"]}
    assert all(c["widths"][retried["move"]] > retried["widths"][retried["move"]] for c in landing.values())
    assert any(
        retried["ratios"]["end_to_end"] < c["ratios"]["end_to_end"] <= budget for c in landing.values()
    )
    (final,) = results["finals"][:1]
    assert final["search_ratios"]["end_to_end"] <= budget
    assert final["candidate"] == min(under, key=lambda c: (c["wer"], c["ctc_loss"]))["id"]
    # a second search with the same fine-tunes reuses every one of them from the cache: none is trained
    cached = sorted(cache.glob("*.pt"))
    assert len(cached) == len(state["candidates"]) - 1

    def no_training(*args, **kwargs):
        raise AssertionError("a cached fine-tune was trained again")

    monkeypatch.setattr("lightning.Trainer.fit", no_training)
    run_search(config, base_model, tmp_path / "b", target=MacsTarget(tiny_corpus["valid"], 6), progress=False)
    assert _tree(tmp_path / "b") == _tree(tmp_path / "a")


def test_a_finished_search_is_extended_by_a_deeper_rerun(tiny_corpus, base_model, tmp_path):
    config = search_config(tiny_corpus, budgets=["1%"], max_depth=1, final_finetune_batches=0)
    target = MacsTarget(tiny_corpus["valid"], 6)
    run_search(config, base_model, tmp_path, target=target, progress=False)
    first = json.loads((tmp_path / STATE_NAME).read_text())
    assert first["finished"] and len(first["levels"]) == 1
    config["search"]["max_depth"] = 2  # not part of the fingerprint: the tree so far stays valid
    run_search(config, base_model, tmp_path, target=target, progress=False)
    second = json.loads((tmp_path / STATE_NAME).read_text())
    assert len(second["levels"]) == 2 and second["levels"][0] == first["levels"][0]
    assert (
        second["stop_reason"] == "reached max_depth 2"
        and second["elapsed_seconds"] > first["elapsed_seconds"]
    )


def test_the_search_study_runs_every_pair_and_writes_one_table(tiny_corpus, base_model, tmp_path):
    from speechprune.search.study import StudyConfig, run_study

    study = StudyConfig.from_dict(
        {
            "budgets": [0.9],
            "decoders": {"greedy": {"backend": "greedy"}, "own": {"backend": "own", "beam_width": 4}},
            "methods": {
                "end_to_end": {"search.objective": "end_to_end", "search.uniform_sparsities": [0.5]},
                "encoder": {"search.objective": "encoder"},
            },
            "runs": [["greedy", "end_to_end"], ["own", "encoder"]],
        },
        "study.yaml",
    )
    config = search_config(tiny_corpus, max_depth=1, final_finetune_batches=0)
    target = MacsTarget(tiny_corpus["valid"], 6)
    report = run_study(
        config, study, base_model, tmp_path, [tiny_corpus["test"]], progress=False, target=target
    )
    assert report["failed_runs"] == {} and report["missing_runs"] == []
    rows = report["rows"]
    assert {(r["decoder"], r["method"]) for r in rows} == {
        ("greedy", "end_to_end"),
        ("greedy", "uniform"),
        ("own", "encoder"),
    }
    own = json.loads((tmp_path / "own-encoder" / "search_results.json").read_text())
    assert own["objective"] == "encoder" and own["unpruned"]["decoder_ms"] > 0
    source, table = (tmp_path / "study" / "study.md").read_text().split("\n\n")
    # both runs timed on the same (fake) target over the same calibration set: one line says so
    assert source.count("\n") == 0 and "fake-macs" in source and tiny_corpus["valid"].name in source
    assert table.count("\n") == 2 + len(rows) and "| greedy | 90pct | uniform |" in table
    for name in ("study.csv", "study.json", "study_wer_vs_latency.png", "study_breakdown.png"):
        assert (tmp_path / "study" / name).stat().st_size > 100
    assert any((tmp_path / "finetune_cache").glob("*.pt"))  # the runs shared one cache
    with pytest.raises(SpeechpruneError, match="no such decoder"):
        StudyConfig.from_dict({**study.__dict__, "runs": [["greedy", "macs"]]}, "study.yaml")


def test_fine_tunes_as_ray_tasks_grow_the_tree_a_local_search_grows(
    tiny_corpus, base_model, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra speechprune[ray]")
    from speechprune.search.finetune import FineTuner

    config = search_config(tiny_corpus, max_depth=1, final_finetune_batches=2, budgets=[0.9])
    config["threads"] = 1  # what makes a fine-tune the same wherever it runs
    target = MacsTarget(tiny_corpus["valid"], 6)
    local = run_search(config, base_model, tmp_path / "local", target=target, progress=False)
    config["search"].update(executor="ray", ray_cpus_per_task=1)

    def not_here(*args, **kwargs):
        raise AssertionError("a fine-tune ran in the search's process, not on a Ray worker")

    monkeypatch.setattr(FineTuner, "train", not_here)  # workers are other processes: unaffected
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = run_search(config, base_model, tmp_path / "ray", target=target, progress=False)
    finally:
        ray.shutdown()
    # the same children, fine-tuned alike on the workers (same seeds, data and threads), the same finals
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")
    assert [f["candidate"] for f in remote["finals"]] == [f["candidate"] for f in local["finals"]]
    for final in remote["finals"]:
        ours = load_model(tmp_path / "ray" / final["model"]).recognizer.state_dict()
        theirs = load_model(tmp_path / "local" / final["model"]).recognizer.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_ray_executor_without_ray_installed_says_which_extra(monkeypatch):
    from speechprune.search.scale_out import RayTasks

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra has
    with pytest.raises(SpeechpruneError, match=r"pip install 'speechprune\[ray\]'"):
        RayTasks(tuner=None)  # refused before the fine-tuner is looked at
    with pytest.raises(ValueError, match="search.executor"):
        SearchConfig(calibration_manifest="x.jsonl", executor="dask")
