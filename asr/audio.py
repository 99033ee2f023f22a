"""Audio input: every file is read with soundfile, mixed to mono and resampled to the model's rate.

torchaudio.load needs FFmpeg through torchcodec, which edge boxes and CI rarely have; soundfile
(libsndfile) reads WAV/FLAC/OGG everywhere, and soxr (libsoxr, high quality) resamples. Nothing here
needs torch, so that the device runtime reads audio as the host does; :func:`load_audio` hands the
training code a tensor.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile
import soxr

from common.errors import AudioError
from common.fileio import atomic_open

if TYPE_CHECKING:
    import torch

log = logging.getLogger("speechprune")
_TRUNCATED = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


def _warn_if_truncated(path: Path, info: soundfile._SoundFileInfo) -> None:
    """A WAV whose data chunk is shorter than its header says was cut off (a copy or a recording that
    stopped): it still decodes, but the user should know the transcript covers only what is there."""
    truncated = _TRUNCATED.search(info.extra_info or "")
    if truncated:
        promised, held = int(truncated.group(1)), int(truncated.group(2))
        log.warning(f"{path}: truncated: the header promises {promised} bytes of audio, the file has {held}")


def load_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """:func:`read_audio` as a torch tensor, for the training and evaluation code."""
    import torch

    return torch.from_numpy(read_audio(path, sample_rate))


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform at ``sample_rate``.

    Raises AudioError naming the file when it is missing, unreadable, empty or holds non-finite samples,
    so that callers can report the file instead of a traceback from inside a worker.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        _warn_if_truncated(path, soundfile.info(str(path)))
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: not readable audio ({error})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return _to_model_rate(path, samples, int(file_rate), sample_rate)


RATE_RANGE = (1000, 384000)  # Hz; a header outside it is damage, and resampling from it could exhaust memory


def _check_rate(path: Path, file_rate: int) -> None:
    if not RATE_RANGE[0] <= file_rate <= RATE_RANGE[1]:
        raise AudioError(f"{path}: sample rate {file_rate} Hz is outside {RATE_RANGE[0]}-{RATE_RANGE[1]} Hz")


def _to_model_rate(path: Path, samples: np.ndarray, file_rate: int, sample_rate: int) -> np.ndarray:
    """(frames, channels) float32 samples -> mono waveform at ``sample_rate``; non-finite audio refused."""
    _check_rate(path, file_rate)
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    waveform = samples.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        waveform = soxr.resample(waveform, file_rate, sample_rate, quality="HQ")  # float32 in, float32 out
    return np.ascontiguousarray(waveform)


class AudioSpans:
    """An audio file read span by span at the model's rate, so that memory does not grow with the file.

    Positions are samples at ``sample_rate``; each span is read from the file (seeking, never loading the
    rest), mixed to mono and resampled on its own. Resampling a span alone disturbs its first and last
    few samples; callers read spans with context around what they keep.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(f"{self.path}: no such audio file")
        try:
            info = soundfile.info(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            raise AudioError(f"{self.path}: not readable audio ({error})") from None
        if info.frames <= 0:
            raise AudioError(f"{self.path}: audio file holds no samples")
        _warn_if_truncated(self.path, info)
        _check_rate(self.path, int(info.samplerate))
        self.file_rate = int(info.samplerate)
        self.file_frames = int(info.frames)
        self.sample_rate = sample_rate
        self.samples = int(round(self.file_frames * sample_rate / self.file_rate))

    @property
    def seconds(self) -> float:
        return self.file_frames / self.file_rate

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) at the model's rate (clipped to the file)."""
        first = max(0, int(round(start * self.file_rate / self.sample_rate)))
        last = min(self.file_frames, int(round(end * self.file_rate / self.sample_rate)))
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                handle.seek(first)
                samples = handle.read(last - first, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            raise AudioError(f"{self.path}: not readable audio ({error})") from None
        if samples.shape[0] == 0:
            raise AudioError(f"{self.path}: no audio between samples {start} and {end}")
        return _to_model_rate(self.path, samples, self.file_rate, self.sample_rate)


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
    if hasattr(waveform, "detach"):  # a tensor
        waveform = waveform.detach().cpu().numpy()
    clipped = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
    with atomic_open(path, "wb") as handle:
        soundfile.write(handle, clipped, sample_rate, format="WAV", subtype="PCM_16")
