"""Synthetic connected-digit speech from eSpeak NG, to widen a corpus of few (all male) speakers.

The engine comes from the ``espeakng-loader`` wheel (library and voice data, no system install) and is
driven through its C API with ctypes. eSpeak's voices combine with its voice variants (``en-us+f2``):
tens of male, female and Klatt-synthesised timbres that, with random rate and pitch, give the
recogniser many more voices than the recorded speakers.

Formant voices are buzzy; two optional engines speak in voices made from recordings of real speakers.
MBROLA's diphone voices, which eSpeak NG drives when the ``espeak-ng`` program, ``mbrola`` and a voice
database are installed (Debian: ``apt-get install espeak-ng mbrola mbrola-us1``, from non-free), and
Flite's voices (Debian main: ``apt-get install flite``): one diphone voice (``kal16``) and three
statistical parametric (clustergen) voices trained on CMU ARCTIC readers (``awb`` Scottish male, ``rms``
US male, ``slt`` US female), whose durations and pitch contours are learned from connected speech.
:func:`installed_mbrola_voices` and :func:`installed_flite_voices` say which are there.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import pickle
import random
import shutil
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from common.errors import SpeechpruneError

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns once the callback has received every sample
_INITIALIZE_DONT_EXIT = 0x8000  # without it the library calls exit() when its data cannot be read
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK = 0
_EDGE_SILENCE_S = 0.05
_SILENCE_LEVEL = 0.003  # of full scale: eSpeak's pauses are near-digital silence, speech is far louder

# Used when the engine cannot be asked: voices of espeak-ng-data/lang/gmw and variants of voices/!v.
_FALLBACK_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
_FALLBACK_VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt3",
)

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    """``espeak_VOICE``; ``languages`` is a priority byte followed by the language code."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class VoiceSettings:
    """One synthetic speaker: eSpeak voice (optionally ``+variant``), rate and pitch."""

    voice: str
    rate_wpm: int
    pitch: int
    pitch_range: int

    def __post_init__(self) -> None:
        # eSpeak silently clamps out-of-range values; refusing them keeps recipes honest.
        if not self.voice:
            raise SpeechpruneError("voice settings need an eSpeak voice name, e.g. 'en-us+f2'")
        for name, value, low, high in (
            ("rate_wpm", self.rate_wpm, 80, 450),
            ("pitch", self.pitch, 0, 100),
            ("pitch_range", self.pitch_range, 0, 100),
        ):
            if not low <= value <= high:
                raise SpeechpruneError(
                    f"voice setting {name}={value} is outside eSpeak's range {low}..{high}"
                )


class _Engine:
    """The loaded, initialised library; its state is process-global, so there is one of these."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise SpeechpruneError(
                "speech synthesis needs the espeakng-loader package: pip install espeakng-loader"
            ) from error
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as error:
            raise SpeechpruneError(f"cannot load eSpeak NG from espeakng-loader: {error}") from error
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        if not hasattr(lib, "espeak_ng_SetRandSeed"):  # added in eSpeak NG 1.52 (espeakng-loader 0.2.4)
            raise SpeechpruneError(
                "eSpeak NG is too old to render reproducibly (no espeak_ng_SetRandSeed): "
                "pip install 'espeakng-loader>=0.2.4'"
            )
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise SpeechpruneError(f"eSpeak NG failed to initialise with its data at {data_path}")
        self.lib = lib
        self.chunks: list[np.ndarray] = []
        # The library keeps only a raw pointer to the callback: this reference keeps it from being collected.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes._Pointer, count: int, _events: int | None) -> int:
        if wav and count > 0:  # the final call carries no samples
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())  # the buffer is reused
        return 0  # 0 asks the engine to go on

    def list_voices(self, spec: _Voice | None) -> list[_Voice]:
        found = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        voices = []
        while found[len(voices)]:
            voices.append(found[len(voices)].contents)
        return voices


@functools.cache
def _engine() -> _Engine:
    return _Engine()


@functools.cache
def _discovered_voice_variants() -> tuple[str, ...]:
    try:
        engine = _engine()
    except SpeechpruneError:
        voices, variants = _FALLBACK_VOICES, _FALLBACK_VARIANTS
    else:
        # Without a spec the engine lists every language voice; the spec "variant" lists voices/!v.
        languages = (voice.languages[1:].decode() for voice in engine.list_voices(None))
        codes = sorted({code for code in languages if code == "en" or code.startswith("en-")})
        # a language code is not always a voice name ("en-gb" is listed, but its voice is called "en")
        voices = tuple(code for code in codes if engine.lib.espeak_SetVoiceByName(code.encode()) == _EE_OK)
        variants = tuple(
            voice.identifier.decode().removeprefix("!v/")
            for voice in engine.list_voices(_Voice(languages=b"variant"))
        )
        if not voices or not variants:
            voices, variants = _FALLBACK_VOICES, _FALLBACK_VARIANTS
    return (*voices, *(f"{voice}+{variant}" for voice in voices for variant in variants))


def english_voice_variants() -> list[str]:
    """English voices alone and with every variant (male, female, Klatt, ...), as eSpeak voice names.

    Asked from the shipped voice data so new eSpeak releases add voices; a fixed list stands in when the
    engine cannot be loaded, so that settings can still be drawn.
    """
    return list(_discovered_voice_variants())


def random_voice_settings(rng: random.Random) -> VoiceSettings:
    """Draws one synthetic speaker; the ranges stay within what still sounds like careful digit reading."""
    return VoiceSettings(
        voice=rng.choice(_discovered_voice_variants()),
        rate_wpm=rng.randint(110, 260),
        pitch=rng.randint(20, 80),
        pitch_range=rng.randint(20, 90),
    )


def _trim_edges(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Leaves ``_EDGE_SILENCE_S`` around the speech, like a clip cut from a recording, padding if short."""
    loud = np.flatnonzero(np.abs(signal) > _SILENCE_LEVEL)
    if loud.size == 0:
        return signal[:0]
    margin = round(_EDGE_SILENCE_S * sample_rate)
    padded = np.pad(signal, margin)
    return padded[loud[0] : loud[-1] + 1 + 2 * margin]


class EspeakSynthesizer:
    """Every utterance is rendered in a copy of the engine that has never spoken, so it depends on its own
    text and settings alone.

    libespeak-ng keeps process-global state that one utterance leaves to the next (the pitch flutter's
    phase, a function-static counter no API resets), so rendered in one process the same string came out
    differently after other strings: a corpus build that rendered 1,010 of its strings again after they
    were deleted differed from the uninterrupted build in 852 of them, and two machines that had built
    their corpus differently trained on different audio. Each call forks the process, speaks in the child
    and sends the samples back: a median 14 ms a string (10-33 ms) against 1 ms for the rendering itself
    (stage 0's 2,000 strings: 61 s instead of 14 s), paid once per corpus. Instances share the one loaded
    engine, which the parent never speaks with.
    """

    def __init__(self) -> None:
        self._engine = _engine()

    @property
    def voices(self) -> tuple[str, ...]:
        """Every English voice and variant it draws from (:func:`english_voice_variants`)."""
        return _discovered_voice_variants()

    @property
    def sample_rate(self) -> int:
        """The engine's native rate (22050 Hz); callers resample to the corpus rate."""
        return self._engine.sample_rate

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Float32 mono speech in [-1, 1] at ``sample_rate``, with about 50 ms of silence at each end."""
        samples = _in_fresh_fork(functools.partial(self._speak, text, settings), what=repr(text))
        speech = _trim_edges(samples.astype(np.float32) / 32768.0, self.sample_rate)
        if speech.size == 0:
            raise SpeechpruneError(f"eSpeak NG produced no audible speech for {text!r}")
        return speech

    def _speak(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """The engine's int16 samples; only ever called in a child of :func:`_in_fresh_fork`."""
        lib = self._engine.lib
        if lib.espeak_SetVoiceByName(settings.voice.encode()) != _EE_OK:
            raise SpeechpruneError(f"eSpeak NG has no voice {settings.voice!r}")
        # Pitch is relative to the variant's base pitch.
        for parameter, value in (
            (_PARAM_RATE, settings.rate_wpm),
            (_PARAM_PITCH, settings.pitch),
            (_PARAM_RANGE, settings.pitch_range),
        ):
            lib.espeak_SetParameter(parameter, value, 0)
        encoded = text.encode()
        # The library seeds the noise of its breathy and whispered variants (f2, f3, f5, whisper, ...) from
        # the clock when it starts, so two corpus builds differed in about one string in ten; seeded from
        # what is said and how, they render the same samples on every run.
        lib.espeak_ng_SetRandSeed(zlib.crc32(repr((text, settings)).encode()))
        self._engine.chunks.clear()
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != _EE_OK:
            raise SpeechpruneError(f"eSpeak NG failed to synthesise {text!r} (error {status})")
        return np.concatenate(self._engine.chunks) if self._engine.chunks else np.zeros(0, np.int16)


def _in_fresh_fork(speak: Callable[[], np.ndarray], what: str) -> np.ndarray:
    """``speak()`` run in a forked child, so whatever engine state it leaves dies with the child (``what``
    names the utterance in errors).

    A :class:`SpeechpruneError` raised in the child is raised here with its message; a child that dies
    otherwise is reported as a failure of the engine, never as empty speech.
    """
    if not hasattr(os, "fork"):
        raise SpeechpruneError(
            "rendering eSpeak NG speech needs os.fork (Linux or macOS), which this Python lacks"
        )
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns on fork in a process with threads (numpy's BLAS pool, tqdm's monitor); the
        # child takes no lock they may hold: it calls the C engine and writes to a pipe.
        warnings.filterwarnings(
            "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
        )
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit handlers
        code = 1
        try:
            os.close(read_end)
            try:
                reply = ("samples", speak())
            except SpeechpruneError as error:
                reply = ("error", str(error))
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(reply, pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0 or not payload:
        raise SpeechpruneError(f"eSpeak NG's rendering process failed for {what} (exit status {exit_code})")
    kind, value = pickle.loads(payload)  # from our own child, never from outside
    if kind == "error":
        raise SpeechpruneError(value)
    return value


MBROLA_ENGLISH_VOICES = ("us1", "us2", "us3", "en1")  # US female, US male x2, British male
MBROLA_DATABASES = Path("/usr/share/mbrola")  # where Debian's mbrola-* packages put the voice databases
_PROGRAM_TIMEOUT_S = 30  # one utterance of a synthesis program
_ESPEAK_DEFAULT_RANGE = 50  # the espeak-ng program has no pitch-range option; this is the value it uses


def installed_mbrola_voices(databases: Path = MBROLA_DATABASES) -> tuple[str, ...]:
    """English MBROLA voices eSpeak NG can speak here (program, synthesiser and database installed)."""
    if shutil.which("espeak-ng") is None or shutil.which("mbrola") is None:
        return ()
    return tuple(voice for voice in MBROLA_ENGLISH_VOICES if (databases / voice / voice).is_file())


def random_mbrola_settings(rng: random.Random, voices: tuple[str, ...]) -> VoiceSettings:
    """One MBROLA speaker: a diphone voice at a random rate and pitch (the same ranges as eSpeak's)."""
    return VoiceSettings(
        voice=f"mb-{rng.choice(voices)}",
        rate_wpm=rng.randint(110, 260),
        pitch=rng.randint(20, 80),
        pitch_range=_ESPEAK_DEFAULT_RANGE,
    )


class MbrolaSynthesizer:
    """MBROLA diphone voices through the ``espeak-ng`` program (one process per utterance)."""

    def __init__(self) -> None:
        self.voices = installed_mbrola_voices()
        if not self.voices:
            raise SpeechpruneError(
                "no English MBROLA voice is installed: apt-get install espeak-ng mbrola mbrola-us1 "
                "mbrola-us2 mbrola-us3 mbrola-en1 (Debian non-free)"
            )
        self.sample_rate = 16000  # every English MBROLA database; checked on each utterance

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Float32 mono speech at ``sample_rate`` with about 50 ms of silence at each end."""
        if settings.voice.removeprefix("mb-") not in self.voices:
            raise SpeechpruneError(f"MBROLA voice {settings.voice!r} is not installed (have: {self.voices})")
        if settings.pitch_range != _ESPEAK_DEFAULT_RANGE:
            raise SpeechpruneError(
                f"the espeak-ng program cannot set pitch_range; MBROLA settings need {_ESPEAK_DEFAULT_RANGE}"
            )
        command = ["espeak-ng", "-v", settings.voice, "-s", str(settings.rate_wpm), "-p", str(settings.pitch)]
        return _run_synthesis_program(
            [*command, "--stdout", text], None, settings.voice, text, self.sample_rate
        )


def _run_synthesis_program(
    command: list[str], output: Path | None, voice: str, text: str, sample_rate: int
) -> np.ndarray:
    """Runs a synthesis program that writes a WAV to ``output`` (or to standard output when None) and
    returns its speech as float32 mono at ``sample_rate``, with about 50 ms of silence at each end."""
    try:
        done = subprocess.run(command, capture_output=True, check=True, timeout=_PROGRAM_TIMEOUT_S)
        source = io.BytesIO(done.stdout) if output is None else output
        samples, rate = soundfile.read(source, dtype="float32")
    except (subprocess.SubprocessError, OSError, soundfile.LibsndfileError) as error:
        raise SpeechpruneError(f"{command[0]} with {voice} failed on {text!r}: {error}") from None
    if rate != sample_rate:
        raise SpeechpruneError(f"{voice} speaks at {rate} Hz, expected {sample_rate}")
    speech = _trim_edges(samples if samples.ndim == 1 else samples.mean(axis=1), rate)
    if speech.size == 0:
        raise SpeechpruneError(f"{voice} produced no audible speech for {text!r}")
    return speech


# Flite's English voices: one diphone voice (kal16, US male) and three clustergen voices trained on CMU ARCTIC
# readers (awb: Scottish male, rms: US male, slt: US female); all speak at 16 kHz ("kal" is kal16 at 8 kHz).
FLITE_ENGLISH_VOICES = ("kal16", "awb", "rms", "slt")
_FLITE_RATE = 16000
_FLITE_STRETCH_RANGE = (0.5, 2.0)
_FLITE_F0_SHIFT_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class FliteSettings:
    """One Flite speaker: a voice (``flite-slt``), its durations stretched (> 1: slower) and its pitch
    scaled (Flite's ``f0_shift``; ``rms`` keeps its own pitch whatever it is asked)."""

    voice: str
    duration_stretch: float
    f0_shift: float

    def __post_init__(self) -> None:
        if not self.voice.startswith("flite-"):
            raise SpeechpruneError(
                f"Flite voice names start with 'flite-' (e.g. 'flite-slt'), not {self.voice!r}"
            )
        for name, value, (low, high) in (
            ("duration_stretch", self.duration_stretch, _FLITE_STRETCH_RANGE),
            ("f0_shift", self.f0_shift, _FLITE_F0_SHIFT_RANGE),
        ):
            if not low <= value <= high:
                raise SpeechpruneError(f"Flite setting {name}={value} is outside {low}..{high}")


def installed_flite_voices() -> tuple[str, ...]:
    """English Flite voices the ``flite`` program here can speak (none when it is not installed)."""
    program = shutil.which("flite")
    if program is None:
        return ()
    try:
        listed = subprocess.run(
            [program, "-lv"], capture_output=True, text=True, check=True, timeout=_PROGRAM_TIMEOUT_S
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return ()
    names = set(listed.partition(":")[2].split())  # "Voices available: kal awb_time kal16 awb rms slt"
    return tuple(voice for voice in FLITE_ENGLISH_VOICES if voice in names)


def random_flite_settings(rng: random.Random, voices: tuple[str, ...]) -> FliteSettings:
    """One Flite speaker: a voice with its durations stretched 0.75-1.35 (a pace about as wide as eSpeak's
    110-260 words a minute) and its pitch moved up to a major third either way (0.8-1.25)."""
    return FliteSettings(
        voice=f"flite-{rng.choice(voices)}",
        duration_stretch=round(rng.uniform(0.75, 1.35), 3),
        f0_shift=round(rng.uniform(0.8, 1.25), 3),
    )


class FliteSynthesizer:
    """Flite's English voices through the ``flite`` program (one process per utterance)."""

    def __init__(self) -> None:
        self.voices = installed_flite_voices()
        if not self.voices:
            raise SpeechpruneError("no English Flite voice is installed: apt-get install flite (Debian main)")
        self.sample_rate = _FLITE_RATE  # every voice in FLITE_ENGLISH_VOICES; checked on each utterance

    def synthesize(self, text: str, settings: FliteSettings) -> np.ndarray:
        """Float32 mono speech at ``sample_rate`` with about 50 ms of silence at each end."""
        voice = settings.voice.removeprefix("flite-")
        if voice not in self.voices:
            raise SpeechpruneError(f"Flite voice {settings.voice!r} is not installed (have: {self.voices})")
        with tempfile.TemporaryDirectory(prefix="speechprune-flite-") as folder:
            output = Path(folder) / "speech.wav"
            command = [
                "flite", "-voice", voice,
                "--setf", f"duration_stretch={settings.duration_stretch}",
                "--setf", f"f0_shift={settings.f0_shift}",
                "-t", text, "-o", str(output),
            ]  # fmt: skip
            return _run_synthesis_program(command, output, settings.voice, text, self.sample_rate)
