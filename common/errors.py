"""Errors that are the user's to fix: the CLI prints them as one clear line, without a traceback."""


class SpeechpruneError(Exception):
    """Base class of errors shown to the user without a traceback (bad input, missing files)."""


class AudioError(SpeechpruneError):
    """An audio file cannot be read or holds no usable audio; the message names the file."""


class ManifestError(SpeechpruneError):
    """A manifest is missing, malformed or points at unusable audio; the message names the file and line."""
