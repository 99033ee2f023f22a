"""What a latency search is asked to do: the ``search``, ``decoder`` and ``target`` config sections.

A budget is either a fraction of the unpruned model's *measured* end-to-end latency ("0.45", "45%") or an
absolute real-time cost in milliseconds per second of audio ("40ms/s"), the form a user states a device
constraint in ("on this board I have 40 ms per second of audio").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from common.errors import SpeechpruneError
from decoding.backends import BACKEND_NAMES, DecoderSettings

OBJECTIVES = ("end_to_end", "encoder", "macs")
ACCURACY_METRICS = ("ctc_loss", "wer")
EXECUTORS = ("local", "ray")  # where fine-tunes run (speechprune.search.scale_out)
_ABSOLUTE = re.compile(r"^\s*([0-9.]+)\s*ms/s\s*$")


@dataclass(frozen=True)
class Budget:
    """A latency budget: ``value`` as a fraction of the unpruned model (``unit='fraction'``) or in
    milliseconds of compute per second of audio (``unit='ms_per_second'``)."""

    value: float
    unit: str = "fraction"

    @classmethod
    def parse(cls, spec: Any) -> Budget:
        text = str(spec).strip()
        absolute = _ABSOLUTE.match(text)
        try:
            if absolute:
                budget = cls(float(absolute.group(1)), "ms_per_second")
            elif text.endswith("%"):
                budget = cls(float(text[:-1]) / 100.0)
            else:
                budget = cls(float(text))
        except ValueError:
            budget = None
        if budget is None or not math.isfinite(budget.value) or budget.value <= 0:
            raise SpeechpruneError(
                f"search.budgets: {spec!r} is not a budget; use a fraction of the unpruned latency "
                "(0.45 or 45%) or milliseconds per second of audio (40ms/s)"
            )
        if budget.unit == "fraction" and budget.value >= 1.0:
            raise SpeechpruneError(f"search.budgets: {spec!r} is not below the unpruned model's latency")
        return budget

    @property
    def label(self) -> str:
        if self.unit == "fraction":
            return f"{self.value * 100:g}pct"
        return f"{self.value:g}ms_per_s"


@dataclass
class SearchConfig:
    """The ``search`` section.

    Attributes:
        objective: the latency the budgets constrain: ``end_to_end`` (encoder + decoder, measured on the
            target), ``encoder`` (what other latency-aware pruners budget) or ``macs`` (the usual proxy:
            fraction of the unpruned model's multiply-accumulates; budgets must then be fractions).
        budgets: budgets to record the best candidate for; the search stops once the tightest is met.
        criterion: importance criterion choosing which units a move removes (mnp, energy, random).
        groups: unit-group prefixes the search may shrink ("lstm", "conv").
        step: fraction of a group's original units one move removes (a group's last move takes what is
            left above ``min_units`` when a whole step would go below it).
        min_units: no group is shrunk below this many units.
        width: candidates kept per level (1 = NetAdapt-like greedy).
        max_depth: levels at most.
        finetune_batches: training batches each candidate is fine-tuned for before it is scored.
        final_finetune_batches: batches the best candidate of each budget is fine-tuned for at the end.
        final_checks: separate interleaved runs that measure the final models (each ratio is their
            median; the spread between runs is recorded, so a budget fit can be read against it).
        accuracy: how candidates are ranked: calibration ``ctc_loss`` (smooth, the default) or ``wer``.
        calibration_manifest: the speech latencies and accuracy are measured on (the deployment's own
            recordings, ideally: decoder cost depends on how sure the encoder is on *that* speech).
        calibration_limit: calibration utterances used (spread over the manifest).
        co_tune: re-tune each candidate's beam threshold / cutoff on its own calibration emissions.
        wer_tolerance: co-tuning keeps the cheapest settings whose WER is at most this much (absolute)
            above the WER with the user's settings.
        seed: seeds fine-tuning (per candidate, so a resumed search repeats it).
        finetune_cache: folder where fine-tuned candidates are kept by a digest of their input model and
            training settings, and reused by any search that asks for the same fine-tune (searches that
            differ in decoder, objective or co-tuning share much of their tree); empty = no cache.
        executor: where the fine-tunes run: ``local`` (this process, one after another) or ``ray`` (a
            level's fine-tunes at once, as Ray tasks: :mod:`speechprune.search.scale_out`).
        ray_address: the Ray cluster (``auto``: the one this machine belongs to; empty: start Ray here).
        ray_cpus_per_task: CPUs a fine-tune task asks Ray for.
        uniform_sparsities: also prune uniformly (every LSTM layer loses the same fraction, ranked by the
            criterion) to each of these sparsities, with the same brief and final fine-tunes, measured on
            the same target: the baseline the search must beat at each budget (empty = none).
    """

    objective: str = "end_to_end"
    budgets: list[Any] = field(default_factory=lambda: [0.6, 0.45, 0.35])
    criterion: str = "mnp"
    groups: list[str] = field(default_factory=lambda: ["lstm", "conv"])
    step: float = 0.1
    min_units: int = 4
    width: int = 1
    max_depth: int = 30
    finetune_batches: int = 20
    final_finetune_batches: int = 100
    final_checks: int = 1
    accuracy: str = "ctc_loss"
    calibration_manifest: str = ""
    calibration_limit: int = 100
    co_tune: bool = False
    wer_tolerance: float = 0.005
    seed: int = 0
    uniform_sparsities: list[float] = field(default_factory=list)
    finetune_cache: str = ""
    executor: str = "local"
    ray_address: str = ""
    ray_cpus_per_task: int = 1

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"search.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"search.executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.accuracy not in ACCURACY_METRICS:
            raise ValueError(f"search.accuracy must be one of {ACCURACY_METRICS}, got {self.accuracy!r}")
        if not 0.0 < self.step < 1.0:
            raise ValueError(f"search.step must lie in (0, 1), got {self.step}")
        for name in (
            "min_units",
            "width",
            "max_depth",
            "calibration_limit",
            "ray_cpus_per_task",
            "final_checks",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        for name in ("finetune_batches", "final_finetune_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"search.{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if not self.calibration_manifest:
            raise ValueError("search.calibration_manifest is required (the speech latencies are measured on)")
        if not self.budgets:
            raise ValueError("search.budgets needs at least one budget")
        if any(not 0.0 < s < 1.0 for s in self.uniform_sparsities):
            raise ValueError(f"search.uniform_sparsities must lie in (0, 1), got {self.uniform_sparsities}")
        if self.wer_tolerance < 0:
            raise ValueError(f"search.wer_tolerance must be >= 0, got {self.wer_tolerance}")

    def parsed_budgets(self) -> list[Budget]:
        """Budgets loosest first (as the search meets them); ``macs`` takes fractions only."""
        budgets = [Budget.parse(b) for b in self.budgets]
        if self.objective == "macs" and any(b.unit != "fraction" for b in budgets):
            raise SpeechpruneError("search.objective macs takes budgets as fractions of the unpruned MACs")
        return sorted(set(budgets), key=lambda b: (b.unit, -b.value))


@dataclass(frozen=True)
class DecoderChoice:
    """The ``decoder`` section: the backend and settings the deployment decodes with."""

    backend: str
    settings: DecoderSettings

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> DecoderChoice:
        values = dict(section or {})
        backend = str(values.pop("backend", "flashlight"))
        if backend not in BACKEND_NAMES:
            raise SpeechpruneError(f"decoder.backend {backend!r}: choose one of {', '.join(BACKEND_NAMES)}")
        known = {f.name for f in fields(DecoderSettings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpeechpruneError(
                f"config section 'decoder': unknown keys {unknown}; known: {sorted(known)}"
            )
        try:
            return cls(backend, DecoderSettings(**values))
        except ValueError as error:
            raise SpeechpruneError(f"config section 'decoder': {error}") from None
