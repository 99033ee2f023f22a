"""Where the speech in a recording starts and ends, so silence before and after it can be left out.

The digits model trained on strings with 0.02-0.3 s of near-silence at each end; a recording with a
second or more of silence or room tone before and after the speech (a person pressing record, then
reading) is another input to it, and costs it a multiple of its error rate. Cutting each recording to
its speech plus a margin of the length training saw brings most of that back (docs/new_voices.md,
"Silence before and after the speech"). Numpy only: the board's runtime uses it too.
"""

from __future__ import annotations

import numpy as np

BELOW_PEAK_DB = 40.0  # a frame this far below the loudest one is not speech ...
ABOVE_FLOOR_DB = 10.0  # ... nor one within this of the recording's noise floor (its 10th percentile frame),
SPEECH_RANGE_DB = 20.0  # ... but one within this of the loudest always is (a recording with no silence)
MARGIN_SECONDS = 0.25  # kept either side of the speech: about the most silence a training string has


def _frame_samples(sample_rate: int) -> int:
    return max(1, sample_rate // 100)  # 10 ms


def frame_energy_db(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy of each whole 10 ms frame of ``waveform`` in dB (a trailing partial frame is left out)."""
    frame = _frame_samples(sample_rate)
    frames = waveform[: len(waveform) // frame * frame].reshape(-1, frame).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def loud_span(
    waveform: np.ndarray,
    sample_rate: int,
    below_peak_db: float = BELOW_PEAK_DB,
    above_floor_db: float | None = ABOVE_FLOOR_DB,
) -> tuple[int, int]:
    """Samples ``[start, end)`` from the first to the last whole 10 ms frame loud enough to be speech.

    A frame is speech when it is within ``below_peak_db`` of the loudest frame and, unless
    ``above_floor_db`` is None, at least that far above the noise floor: in a noisy recording the first
    bound alone would count room tone as speech. The floor is the 10th-percentile frame, which in a
    recording with little or no silence is speech; a frame within ``SPEECH_RANGE_DB`` of the loudest is
    therefore speech whatever the floor. A recording shorter than a frame is returned whole.
    """
    energy = frame_energy_db(waveform, sample_rate)
    if energy.size == 0:
        return 0, len(waveform)
    peak = float(energy.max())
    threshold = peak - below_peak_db
    if above_floor_db is not None:
        floor = float(np.percentile(energy, 10))
        threshold = min(max(threshold, floor + above_floor_db), peak - min(SPEECH_RANGE_DB, below_peak_db))
    loud = np.flatnonzero(energy >= threshold)
    frame = _frame_samples(sample_rate)
    return int(loud[0]) * frame, (int(loud[-1]) + 1) * frame


def speech_span(waveform: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """Samples ``[start, end)`` of a recording to encode: its :func:`loud_span` widened by
    ``MARGIN_SECONDS`` either side, within the recording, less any digital silence (samples exactly zero:
    padding, a recorder's gate) at either end, which no microphone records and training never saw."""
    start, end = loud_span(waveform, sample_rate)
    margin = round(MARGIN_SECONDS * sample_rate)
    start, end = max(0, start - margin), min(len(waveform), end + margin)
    recorded = np.flatnonzero(waveform[start:end])
    if recorded.size == 0:
        return start, end
    return start + int(recorded[0]), start + int(recorded[-1]) + 1
