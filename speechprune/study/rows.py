"""The study's rows: one typed record per (model, decoder configuration), and the one place naming columns.

A row is measured (:mod:`speechprune.study.run`), then completed with derived columns (:func:`derive`):
encoder latency pooled per shape, end-to-end latency, real-time factor and ratios to the unpruned model.
``results.json`` and ``results.csv`` hold :meth:`StudyRow.to_flat` (flat keys such as
``encoder_ms_1t``); :meth:`StudyRow.from_flat` reads them back, so the report drawn from a results file
is the report the study drew.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

SEARCH_COLUMNS = ("extensions_per_frame", "active_mean", "tokens_kept_mean", "lm_queries_per_utterance")
PER_THREAD = {  # attribute -> flat-key pattern; one value per encoder thread count
    "encoder_ms_model": "encoder_ms_{t}t_model",
    "encoder_ms": "encoder_ms_{t}t",
    "end_to_end_ms": "end_to_end_ms_{t}t",
    "rtf": "rtf_{t}t",
    "encoder_speedup": "encoder_speedup_{t}t",
    "end_to_end_speedup": "end_to_end_speedup_{t}t",
}
RETUNED_LEVERS = ("thr", "T")  # suffixes of the re-tuned configurations: "flashlight+lm+thr", "...+T"
GREEDY_PREFIX = "wer_greedy_"
DEVICE_PREFIX = "device_"


@dataclass
class StudyRow:
    """One model measured with one decoder configuration.

    Measured: accuracy (``wer`` with this decoder, ``wer_greedy`` on the same utterances, greedy WER on
    more manifests in ``wer_greedy_by_manifest``), output sharpness, the own decoder's search statistics
    (``search``; empty for other backends), per-utterance decoder time (mean of medians, p90) and the
    model's own encoder time per thread count (``encoder_ms_model``). Derived by :func:`derive`: the rest.
    """

    model: str
    method: str
    regularizer: str
    regularizer_weight: float
    target_sparsity: float
    lstm_sparsity: float
    parameters: int
    encoder_shape: str
    macs_per_second: int
    decoder: str
    utterances: int
    wer: float
    wer_greedy: float
    entropy_mean: float
    entropy_nonblank_mean: float
    tokens_for_95pct_mean: float
    decoder_ms: float
    decoder_ms_p90: float
    audio_seconds_mean: float
    encoder_ms_model: dict[int, float]
    search: dict[str, float] = field(default_factory=dict)
    wer_greedy_by_manifest: dict[str, float] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    runtime: str = "torch"  # torch, onnx or onnx-int8 (speechprune.study.models.RUNTIMES)
    beam_threshold: float | None = None  # the decoder's, as this row ran it (re-tuned rows: the model's own)
    temperature: float = 1.0
    seed: int | None = None  # the pruning run's seed: rows alike but for it are repeats (report: over seeds)
    # derived
    encoder_ms: dict[int, float] = field(default_factory=dict)
    end_to_end_ms: dict[int, float] = field(default_factory=dict)
    rtf: dict[int, float] = field(default_factory=dict)
    encoder_speedup: dict[int, float] = field(default_factory=dict)
    end_to_end_speedup: dict[int, float] = field(default_factory=dict)
    mac_reduction: float | None = None
    decoder_slowdown: float | None = None

    @property
    def threads(self) -> list[int]:
        return sorted(self.encoder_ms_model)

    @property
    def is_unpruned(self) -> bool:
        """The unpruned model, on any runtime."""
        return self.method == "unpruned"

    @property
    def is_reference(self) -> bool:
        """The row every ratio is taken against: the unpruned model as trained (torch)."""
        return self.is_unpruned and self.runtime == "torch"

    def to_flat(self) -> dict[str, Any]:
        """The row as flat JSON/CSV columns, in a stable order."""
        nested = {"search", "wer_greedy_by_manifest", "device", *PER_THREAD}
        flat: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in nested}
        flat.update(self.search)
        for attribute, pattern in PER_THREAD.items():
            for t, value in sorted(getattr(self, attribute).items()):
                flat[pattern.format(t=t)] = value
        flat.update({GREEDY_PREFIX + name: wer for name, wer in self.wer_greedy_by_manifest.items()})
        flat.update({DEVICE_PREFIX + key: value for key, value in self.device.items()})
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> StudyRow:
        """Read a row written by :meth:`to_flat`; raises KeyError/TypeError/ValueError on a malformed one."""
        plain = {f.name for f in fields(cls)} - {"search", "wer_greedy_by_manifest", "device", *PER_THREAD}
        values: dict[str, Any] = {name: flat[name] for name in plain if name in flat}
        values["search"] = {key: flat[key] for key in SEARCH_COLUMNS if key in flat}
        for attribute, pattern in PER_THREAD.items():
            prefix, suffix = pattern.split("{t}")
            values[attribute] = {
                int(key[len(prefix) : -len(suffix)]): float(value)
                for key, value in flat.items()
                if key.startswith(prefix)
                and key.endswith(suffix)
                and key[len(prefix) : -len(suffix)].isdigit()
            }
        values["wer_greedy_by_manifest"] = {
            key[len(GREEDY_PREFIX) :]: value for key, value in flat.items() if key.startswith(GREEDY_PREFIX)
        }
        values["device"] = {
            key[len(DEVICE_PREFIX) :]: value for key, value in flat.items() if key.startswith(DEVICE_PREFIX)
        }
        return cls(**values)


def fixed_configuration(decoder: str) -> str:
    """The decoder configuration a row ran, without its re-tuned lever ("flashlight+lm+thr" ->
    "flashlight+lm"); a fixed configuration is its own."""
    base, _, lever = decoder.rpartition("+")
    return base if base and lever in RETUNED_LEVERS else decoder


def derive(rows: Sequence[StudyRow]) -> list[StudyRow]:
    """Fill the derived columns: encoder latency per shape, end-to-end latency, RTF, ratios to unpruned.

    Models of the same shape on the same runtime run the same dense kernels, so their encoder timings
    (``encoder_ms_model``, measured separately) are averaged into ``encoder_ms``: the spread between them
    is measurement noise, and pooling keeps it from deciding comparisons between equally pruned models.
    End-to-end latency is that encoder time plus this model's decoder time, over the same utterances.
    Ratios are to the unpruned torch model with the same decoder.
    """
    rows = list(rows)
    per_shape: dict[tuple[str, str, int], dict[str, float]] = {}
    for row in rows:
        for t, ms in row.encoder_ms_model.items():
            per_shape.setdefault((row.encoder_shape, row.runtime, t), {})[row.model] = ms
    for row in rows:
        for t in row.threads:
            encoder_ms = statistics.fmean(per_shape[(row.encoder_shape, row.runtime, t)].values())
            row.encoder_ms[t] = round(encoder_ms, 4)
            row.end_to_end_ms[t] = round(encoder_ms + row.decoder_ms, 4)
            row.rtf[t] = float(f"{(encoder_ms + row.decoder_ms) / 1000 / row.audio_seconds_mean:.4g}")
    unpruned = {r.decoder: r for r in rows if r.is_reference}
    for row in rows:
        base = unpruned[row.decoder]
        row.mac_reduction = round(base.macs_per_second / row.macs_per_second, 4)
        row.decoder_slowdown = round(row.decoder_ms / base.decoder_ms, 4)
        for t in row.threads:
            row.encoder_speedup[t] = round(base.encoder_ms[t] / row.encoder_ms[t], 4)
            row.end_to_end_speedup[t] = round(base.end_to_end_ms[t] / row.end_to_end_ms[t], 4)
    return rows
