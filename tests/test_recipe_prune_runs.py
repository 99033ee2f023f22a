"""The recipes' named pruning runs (recipes/common/prune_runs.sh): a lambda sweep over seeds is one list."""

from __future__ import annotations

import subprocess
from pathlib import Path

PRUNE_RUNS = Path(__file__).resolve().parents[1] / "recipes" / "common" / "prune_runs.sh"


def _bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; . {PRUNE_RUNS}; {script}"], capture_output=True, text=True
    )


def test_every_run_once_per_seed_with_its_weight_and_seed_as_overrides():
    names = _bash('prune_run_names "mnp_vanilla vib_entropy@3" "1 2"').stdout.split()
    assert names == ["mnp_vanilla_seed1", "mnp_vanilla_seed2", "vib_entropy@3_seed1", "vib_entropy@3_seed2"]
    assert _bash('prune_run_names "mnp_entropy" ""').stdout.split() == ["mnp_entropy"]
    listed = _bash(
        'for n in vib_entropy@3_seed2 mnp_entropy; do prune_run_options "$n" 1.0; echo "${opts[*]}"; done'
    )
    assert listed.stdout.splitlines() == [
        "--set prune.criterion=vib --set prune.schedule.start_epoch=1 --set regularizer.weight=3"
        " --set seed=2 --set data.seed=2 --set prune.seed=2",
        "--set prune.criterion=mnp --set regularizer.weight=1.0",  # no seed: the config's
    ]


def test_an_unknown_run_or_a_weight_that_is_not_a_number_is_one_line_naming_it():
    for name, message in (
        ("mnp_entropy@x", "the weight 'x' is not a number"),
        ("mnp_foo_seed2", "unknown"),
        ("mnp_vanilla@3_seed1", "a vanilla run has no regularizer weight"),
    ):
        result = _bash(f'prune_run_options {name} 1.0; echo "reached"')
        assert result.returncode == 2 and "reached" not in result.stdout
        assert result.stderr.count("\n") == 1 and name in result.stderr and message in result.stderr
