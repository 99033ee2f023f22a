"""Simulated room impulse responses: the rooms a deployed recognizer hears and FSDD's one setup never had.

FSDD was recorded close to the microphone in one quiet setting, so a model trained on it has never heard
a room. The bank is drawn once (seeded, so a training run is reproducible) with pyroomacoustics' image
source method in shoebox rooms of random size, reverberation time and source/microphone placement, and
training convolves utterances with responses drawn from it.
"""

from __future__ import annotations

import functools

import numpy as np

from common.errors import SpeechpruneError

_MAX_IMAGE_ORDER = (
    40  # reflections per wall; higher orders add only the quietest end of the tail (40 ms a room)
)
_ROOM_SIZE_M = ((3.0, 3.0, 2.4), (9.0, 7.0, 3.5))  # living room to small office / classroom
_WALL_CLEARANCE_M = 0.5


@functools.lru_cache(maxsize=4)
def simulated_rooms(
    count: int, sample_rate: int, rt60_seconds: tuple[float, float], seed: int = 0
) -> tuple[np.ndarray, ...]:
    """``count`` float32 impulse responses, each starting at its direct path with unit energy.

    Starting at the direct path keeps the speech where the transcript's alignment expects it; unit
    energy keeps responses comparable (:func:`asr.augment.reverberate` restores the input's peak level).
    Cached: every fine-tune of a pruning search builds a data module, and drawing the bank takes seconds.
    """
    try:
        import pyroomacoustics as pra
    except ImportError as error:
        raise SpeechpruneError(
            "room reverberation (augment.reverb_prob > 0) needs pyroomacoustics: pip install "
            "'speechprune[train]'"
        ) from error
    low, high = rt60_seconds
    if not 0.0 < low <= high:
        raise SpeechpruneError(f"augment.rt60_seconds must be 0 < low <= high, got {list(rt60_seconds)}")
    rng = np.random.default_rng(seed)
    responses = []
    while len(responses) < count:
        size = rng.uniform(*_ROOM_SIZE_M)
        rt60 = float(rng.uniform(low, high))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, size)
        except ValueError:  # this reverberation time is impossible in a room this small: draw another room
            continue
        order = min(max_order, _MAX_IMAGE_ORDER)
        room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=order)
        room.add_source(rng.uniform(_WALL_CLEARANCE_M, size - _WALL_CLEARANCE_M))
        room.add_microphone(rng.uniform(_WALL_CLEARANCE_M, size - _WALL_CLEARANCE_M))
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float64)
        response = response[int(np.argmax(np.abs(response))) :]
        responses.append((response / np.sqrt(np.sum(response**2))).astype(np.float32))
    return tuple(responses)
