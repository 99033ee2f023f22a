"""Audio input: every file is read with soundfile, mixed to mono and resampled to the model's rate.

torchaudio.load needs FFmpeg through torchcodec, which edge boxes and CI rarely have; soundfile
(libsndfile) reads WAV/FLAC/OGG everywhere, and torchaudio does the resampling.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from common.errors import AudioError
from common.fileio import atomic_open


def load_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read ``path`` as a mono float32 waveform at ``sample_rate``.

    Raises AudioError naming the file when it is missing, unreadable, empty or holds non-finite samples,
    so that callers can report the file instead of a traceback from inside a worker.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: not readable audio ({error})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    waveform = torch.from_numpy(samples.mean(axis=1))
    if file_rate != sample_rate:
        waveform = AF.resample(waveform, orig_freq=int(file_rate), new_freq=sample_rate)
    return waveform.contiguous()


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header alone (cheap: used to validate and bucket manifests)."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: not readable audio ({error})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return info.frames / info.samplerate


def write_wav(path: str | os.PathLike, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> None:
    """Write 16-bit PCM WAV atomically (the corpus builder may be interrupted and resumed)."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    clipped = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
    with atomic_open(path, "wb") as handle:
        soundfile.write(handle, clipped, sample_rate, format="WAV", subtype="PCM_16")
