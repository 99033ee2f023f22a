"""Voice adaptation by frequency warping (VTLN at test time), baked into the model's mel filterbank.

A model trained on a handful of speakers hears a new voice best when its spectrum is stretched or
squeezed toward the voices it knows: vocal tracts differ in length, which scales formant frequencies.
Training already warps spectra at random (VTLP, :func:`asr.features.vtlp_warp`); here one factor is fitted
to a speaker from a few transcribed recordings (the factor whose warped features give the references the
lowest CTC loss, as maximum-likelihood VTLN does) and folded into the filterbank. The warp is linear in
the power spectrum, so a warped filterbank computes exactly what warping the spectrum before the mel
filters would, at no cost per utterance: the adapted model file runs unchanged everywhere a model runs
(evaluate, transcribe, ONNX export and the numpy front end on a device, which read the filterbank).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asr.checkpoint import load_model, save_model
from asr.features import vtlp_warp
from asr.inference import EvaluationAudio, ctc_loss, encode_batched, load_evaluation_audio
from asr.recognizer import SpeechRecognizer
from asr.tokenizer import Tokenizer
from common.errors import SpeechpruneError

VOICE_WARP_KEY = "voice_warp"  # model-file metadata: the fitted factor, its losses and what it was fitted on

# Factors tried by default: the training VTLP range (0.9-1.1), the warps the model has learned to hear.
# Wider grids and lower thresholds were worse on two folds' random 20-string enrolments (docs/new_voices.md)
DEFAULT_FACTORS: tuple[float, ...] = tuple(round(0.9 + 0.025 * step, 3) for step in range(9))  # 0.9-1.1
# A factor must lower the enrolment loss by this fraction of the unwarped loss to replace 1.0: on 20
# strings, differences of a few percent are noise, and the unwarped model is the safe default
MIN_RELATIVE_GAIN = 0.05


def warp_recognizer(recognizer: SpeechRecognizer, factor: float) -> SpeechRecognizer:
    """A copy of ``recognizer`` whose filterbank hears every voice warped by ``factor`` (> 1 raises formants).

    The warp matrix is :func:`asr.features.vtlp_warp` applied to the identity (one implementation of the
    warp): warped power = W @ power, so mel = (W @ power)^T fb = power^T (W^T fb).
    """
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"voice warp factor {factor} outside [0.5, 2.0]")
    adapted = copy.deepcopy(recognizer)
    filterbank = adapted.features.mel_scale.fb  # (freq bins, n_mels)
    identity = torch.eye(filterbank.shape[0], dtype=filterbank.dtype)[None]
    warp = vtlp_warp(identity, torch.tensor([factor]))[0]
    adapted.features.mel_scale.fb = warp.T @ filterbank
    return adapted.eval()


@dataclass(frozen=True)
class VoiceWarpFit:
    """Enrolment losses by factor and the factor chosen (1.0 unless another is clearly better)."""

    losses: dict[float, float]
    factor: float
    utterances: int

    @property
    def lowest(self) -> float:
        """The factor of lowest enrolment loss, whether or not it was clearly enough lower to be chosen."""
        return min(self.losses, key=lambda factor: (self.losses[factor], abs(factor - 1.0)))

    def relative_gain(self, factor: float | None = None) -> float:
        """Fraction of the unwarped enrolment loss that ``factor`` (the chosen one by default) removes."""
        return 1.0 - self.losses[self.factor if factor is None else factor] / self.losses[1.0]


def fit_voice_warp(
    recognizer: SpeechRecognizer,
    tokenizer: Tokenizer,
    enrolment: EvaluationAudio,
    factors: Sequence[float] = DEFAULT_FACTORS,
) -> VoiceWarpFit:
    """The factor whose warped model gives ``enrolment``'s references the lowest mean CTC loss, when that is
    :data:`MIN_RELATIVE_GAIN` or more below the unwarped loss; else 1.0 (every factor's loss is kept)."""
    if not enrolment.waveforms:
        raise ValueError("voice adaptation needs at least one transcribed recording")
    tried = sorted(set(factors) | {1.0})
    losses = {
        factor: ctc_loss(
            encode_batched(warp_recognizer(recognizer, factor), enrolment.waveforms),
            enrolment.references,
            tokenizer,
        )
        for factor in tried
    }
    fit = VoiceWarpFit(losses, 1.0, len(enrolment.waveforms))
    if fit.relative_gain(fit.lowest) >= MIN_RELATIVE_GAIN:
        fit = dataclasses.replace(fit, factor=fit.lowest)
    return fit


def adapt_model_file(
    model_path: str | os.PathLike,
    enrolment_manifest: str | os.PathLike,
    out_path: str | os.PathLike,
    factors: Sequence[float] = DEFAULT_FACTORS,
) -> VoiceWarpFit:
    """Fit a voice warp on a manifest of one speaker's transcribed recordings; write the adapted model.

    The adapted file is a normal model file (same layers, warped filterbank) whose metadata records the
    factor under ``voice_warp``. A model that is already adapted is refused: warps would compound.
    """
    loaded = load_model(model_path)
    if VOICE_WARP_KEY in loaded.metadata:
        raise SpeechpruneError(f"{model_path}: already adapted to a voice; adapt the original model")
    enrolment = load_evaluation_audio(enrolment_manifest, loaded.recognizer.sample_rate)
    if not enrolment.waveforms:
        raise SpeechpruneError(f"{enrolment_manifest}: no recordings to adapt to")
    fit = fit_voice_warp(loaded.recognizer, loaded.tokenizer, enrolment, factors)
    metadata = dict(loaded.metadata)
    metadata[VOICE_WARP_KEY] = {
        "factor": fit.factor,
        "enrolment_manifest": str(enrolment_manifest),
        "enrolment_utterances": fit.utterances,
        "losses": {f"{factor:g}": round(loss, 5) for factor, loss in fit.losses.items()},
        "adapted_from": str(model_path),
    }
    save_model(out_path, warp_recognizer(loaded.recognizer, fit.factor), loaded.tokenizer, metadata)
    return fit
