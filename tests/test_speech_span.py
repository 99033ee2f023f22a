"""Silence before and after the speech: where it is found, and that transcription leaves it out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asr.speech_span import MARGIN_SECONDS, speech_span
from asr.transcriber import Transcriber
from tests.conftest import SAMPLE_RATE, tone_digit

FRAME = SAMPLE_RATE // 100


def _recorded(lead_s: float, trail_s: float, noise_db_below: float | None) -> tuple[np.ndarray, int, int]:
    """Three tone digits with ``lead_s``/``trail_s`` of silence, optionally room noise over it all;
    returns the waveform and the speech's first and last sample."""
    speech = np.concatenate([tone_digit(d, 0, 0) for d in (3, 1, 4)])
    lead, trail = np.zeros(round(lead_s * SAMPLE_RATE)), np.zeros(round(trail_s * SAMPLE_RATE))
    waveform = np.concatenate([lead, speech, trail]).astype(np.float32)
    if noise_db_below is not None:
        level = np.sqrt(np.mean(speech**2)) / 10 ** (noise_db_below / 20)
        waveform += (np.random.default_rng(0).standard_normal(len(waveform)) * level).astype(np.float32)
    return waveform, len(lead), len(lead) + len(speech)


@pytest.mark.parametrize("noise_db_below", [40.0, 25.0])
def test_the_span_is_the_speech_and_a_margin_either_side(noise_db_below):
    waveform, first, last = _recorded(1.5, 2.0, noise_db_below)
    start, end = speech_span(waveform, SAMPLE_RATE)
    margin = round(MARGIN_SECONDS * SAMPLE_RATE)
    # the tones fade in and out over 20 ms: within two frames of where they start and stop
    assert abs(start - (first - margin)) <= 2 * FRAME
    assert abs(end - (last + margin)) <= 2 * FRAME


def test_digital_silence_is_left_out_of_the_margin():
    waveform, first, last = _recorded(1.5, 2.0, None)  # exact zeros around the tones' faint hiss
    assert speech_span(waveform, SAMPLE_RATE) == (first, last)


def test_a_recording_without_silence_or_shorter_than_a_frame_is_kept_whole():
    speech = np.concatenate([tone_digit(d, 0, 0) for d in (5, 9)])
    assert speech_span(speech, SAMPLE_RATE) == (0, len(speech))
    assert speech_span(np.ones(FRAME - 1, np.float32), SAMPLE_RATE) == (0, FRAME - 1)
    assert speech_span(np.zeros(3 * SAMPLE_RATE, np.float32), SAMPLE_RATE) == (0, 3 * SAMPLE_RATE)


class _RecordingEncoder:
    """Stands in for the model: records what it is given; emits unit 2 at frame 5 of each input."""

    sample_rate = SAMPLE_RATE
    frame_stride = 320
    parameters = None

    def __init__(self, units: int) -> None:
        self.units = units
        self.lengths: list[int] = []

    def encode(self, waveforms):
        self.lengths += [len(w) for w in waveforms]
        outputs = []
        for waveform in waveforms:
            emissions = np.full((len(waveform) // self.frame_stride, self.units), -20.0, np.float32)
            emissions[:, 0] = 0.0  # blank
            emissions[5, 0], emissions[5, 2] = -20.0, 0.0
            outputs.append(emissions)
        return outputs


@pytest.mark.parametrize("trim", [True, False])
def test_transcription_encodes_the_speech_and_keeps_token_times_in_the_whole_recording(base_model, trim):
    transcriber = Transcriber(base_model, trim_edges=trim)
    encoder = transcriber.encoder = _RecordingEncoder(len(transcriber.pieces))
    waveform, first, _ = _recorded(1.5, 2.0, 30.0)
    (transcript,) = transcriber.transcribe([waveform])
    start, end = speech_span(waveform, SAMPLE_RATE)
    start = -(-start // encoder.frame_stride) * encoder.frame_stride  # whole frames, within the span
    if trim:
        assert encoder.lengths == [end - start] and end - start < len(waveform) - 2.5 * SAMPLE_RATE
        assert transcript.token_frames == [start // encoder.frame_stride + 5]
    else:
        assert encoder.lengths == [len(waveform)]
        assert transcript.token_frames == [5]
    assert transcript.token_ids == [2]


def test_evaluate_trims_by_default_and_records_it(base_model, tiny_corpus, tmp_path):
    from speechprune.cli import main

    for flags, trimmed in (([], True), (["--no-trim"], False)):
        out = tmp_path / str(trimmed)
        assert main(["evaluate", str(base_model), str(tiny_corpus["test"]), "--out", str(out), *flags]) == 0
        summary = json.loads((out / f"{tiny_corpus['test'].stem}.summary.json").read_text())
        assert summary["trim_edges"] is trimmed
