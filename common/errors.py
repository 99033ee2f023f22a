"""Errors that are the user's to fix: the CLI prints them as one clear line, without a traceback."""


class SpeechpruneError(Exception):
    """Base class of errors shown to the user without a traceback (bad input, missing files)."""


class AudioError(SpeechpruneError):
    """An audio file cannot be read or holds no usable audio; the message names the file."""


class ManifestError(SpeechpruneError):
    """A manifest is missing, malformed or points at unusable audio; the message names the file and line."""


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM): work in progress was saved or discarded, never half-written.

    Not a :class:`SpeechpruneError`: nothing was wrong with the input, and the CLI exits 143 (128 + SIGTERM),
    the status schedulers and shells expect of a terminated job, never 0. A ``BaseException``, as
    ``KeyboardInterrupt`` is: the signal lands wherever the main thread is, and library code that catches
    ``Exception`` there would swallow it (tqdm does, while it starts its monitor thread: a SIGTERM in that
    instant became a warning and the job ran on to exit 0), as would a batch job's per-file error handling.
    """
