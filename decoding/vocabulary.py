"""What the decoding layer needs of a tokenizer, as a protocol, so that decoding never imports ``asr``.

:class:`asr.tokenizer.Tokenizer` satisfies :class:`PieceVocabulary`; so does any object with the CTC output
pieces by id and a text -> ids split (a test's fake tokenizer, another toolkit's tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class PieceVocabulary(Protocol):
    """The CTC output units by id (index = output-layer row) and the split of a transcript into them."""

    @property
    def pieces(self) -> list[str]: ...

    def encode(self, text: str) -> list[int]: ...


def pieces_of(vocabulary: Sequence[str] | PieceVocabulary) -> list[str]:
    """The pieces by id of a vocabulary given either as the piece list itself or as a tokenizer."""
    if isinstance(vocabulary, PieceVocabulary):
        return list(vocabulary.pieces)
    return list(vocabulary)
