"""Timing steps for :func:`common.measure.interleaved` that need no torch: the decoder's on emissions
already computed, and the exported encoder's (numpy front end + onnxruntime).

The device agent times with these on a board without torch; the torch encoder's steps are
:func:`asr.inference.encoder_steps`. Each step is one utterance, so candidates interleave utterance by
utterance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from asr.onnx_model import ExportedModel
from common.measure import Round
from decoding import as_array
from decoding.backends import BackendResult, DecoderBackend


def exported_steps(model: ExportedModel, waveforms: Sequence[Any]) -> list[Round]:
    """One step per utterance: the exported encoder on that waveform alone, its seconds."""

    def step(samples: np.ndarray) -> Round:
        def run() -> list[float]:
            started = time.perf_counter()
            model.log_probs(samples)
            return [time.perf_counter() - started]

        return run

    return [step(np.asarray(w, dtype=np.float32)) for w in waveforms]


class DecoderSteps(Sequence[Round]):
    """Timing steps that decode one utterance's emissions each with one backend; keep the last results.

    The backend times each utterance's decode call itself (:class:`decoding.backends.DecoderBackend`),
    so a step returns those seconds and no conversion or padding is counted. :attr:`decoded` holds the
    last decoded result of every utterance, in order, once every step has run.
    """

    def __init__(self, decoder: DecoderBackend, emissions: Sequence[Any]) -> None:
        self.decoder = decoder
        self.emissions = [as_array(e, np.float32)[None] for e in emissions]
        self.results: list[BackendResult | None] = [None] * len(self.emissions)

    def __len__(self) -> int:
        return len(self.emissions)

    def __getitem__(self, index: int) -> Round:  # type: ignore[override]
        emission = self.emissions[index]
        length = np.array([emission.shape[1]])

        def run() -> list[float]:
            (result,) = self.decoder(emission, length)
            self.results[index] = result
            return [result.wall_time_s]

        return run

    @property
    def decoded(self) -> list[BackendResult]:
        """The last results of every utterance (each step must have run at least once)."""
        if any(r is None for r in self.results):
            raise RuntimeError("DecoderSteps.decoded before every utterance was decoded")
        return list(self.results)  # type: ignore[arg-type]
