"""A content hash of a set of utterances: did two runs, perhaps on two machines, hear the same audio?

Corpora are rendered anew on every machine (FSDD strings, eSpeak NG voices), and runs made on different
machines or in different sessions are compared fold by fold (leave-one-speaker-out). Paths differ between
machines; the bytes of each audio file and its transcript, in order, are the same exactly when the
build is. Sixteen hex digits of SHA-256 name a set far beyond any chance collision among a project's runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from asr.data.manifest import Utterance

DIGITS = 16
_CHUNK = 1 << 20


class AudioFingerprint:
    """Accumulates utterances one by one (a batch job adds only those it could read)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, utterance: Utterance) -> None:
        text = utterance.text.encode("utf-8")
        self._hash.update(len(text).to_bytes(8, "little") + text)
        with open(utterance.audio_filepath, "rb") as handle:
            # lengths first, so that no other split of the same bytes into texts and files hashes alike
            self._hash.update(os.fstat(handle.fileno()).st_size.to_bytes(8, "little"))
            while chunk := handle.read(_CHUNK):
                self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:DIGITS]


def audio_fingerprint(utterances: Iterable[Utterance]) -> str:
    """The fingerprint of ``utterances`` in their order (every audio file must be readable)."""
    fingerprint = AudioFingerprint()
    for utterance in utterances:
        fingerprint.add(utterance)
    return fingerprint.hexdigest()
