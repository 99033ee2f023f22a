"""SentencePiece output units (character or unigram) with the CTC blank at id 0.

Blank convention: SentencePiece's padding piece is renamed ``<blk>`` and given id 0, so the tokenizer's
vocabulary *is* the CTC output layer (index 0 = blank), decoding drops it as a control symbol, and no
offset has to be remembered anywhere. ``<unk>`` is id 1; there are no BOS/EOS pieces.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from common.errors import SpeechpruneError
from common.fileio import atomic_open
from common.units import BLANK_ID, BLANK_PIECE, UNK_ID, UNK_PIECE, normalize_text

__all__ = ["Tokenizer", "normalize_text", "train_tokenizer"]


class Tokenizer:
    """Text <-> unit ids, backed by a serialized SentencePiece model that travels inside checkpoints."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        if self._processor.id_to_piece(BLANK_ID) != BLANK_PIECE:
            raise SpeechpruneError(
                f"tokenizer has no {BLANK_PIECE} at id {BLANK_ID}; train it with speechprune"
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise SpeechpruneError(f"{path}: no such tokenizer model")
        return cls(path.read_bytes())

    def save(self, path: str | os.PathLike) -> None:
        with atomic_open(path, "wb") as handle:
            handle.write(self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def pieces(self) -> list[str]:
        """Unit strings by id (index 0 is the blank): what decoders need as their token list."""
        return [self._processor.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(normalize_text(text), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(i) for i in ids if int(i) != BLANK_ID])


def train_tokenizer(
    texts: Iterable[str], model_type: str = "char", vocab_size: int | None = None
) -> Tokenizer:
    """Train SentencePiece on transcripts.

    ``char`` uses every character seen (vocab_size is ignored); ``unigram`` needs ``vocab_size``, including
    the blank and ``<unk>``. Digit strings with unigram learn whole-word units, which shortens the CTC output.
    """
    if model_type not in ("char", "unigram", "bpe"):
        raise SpeechpruneError(f"tokenizer model_type must be char, unigram or bpe, not {model_type!r}")
    sentences = [normalize_text(t) for t in texts if normalize_text(t)]
    if not sentences:
        raise SpeechpruneError("no transcripts to train the tokenizer on")
    if model_type == "char":
        vocab_size = (
            len({c for s in sentences for c in s.replace(" ", "")}) + 3
        )  # + blank, unk, word boundary
    elif vocab_size is None:
        raise SpeechpruneError(f"tokenizer model_type {model_type} needs vocab_size")
    model = io.BytesIO()
    try:
        _train_sentencepiece(sentences, model, model_type, vocab_size)
    except RuntimeError as error:
        reason = str(error).split("] ")[-1]
        raise SpeechpruneError(
            f"SentencePiece {model_type} training with vocab_size={vocab_size} failed: {reason}"
        ) from None
    return Tokenizer(model.getvalue())


def _train_sentencepiece(sentences: list[str], model: io.BytesIO, model_type: str, vocab_size: int) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=1.0,
        pad_id=BLANK_ID,
        pad_piece=BLANK_PIECE,
        unk_id=UNK_ID,
        unk_piece=UNK_PIECE,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=model_type != "char",
        minloglevel=2,
    )
