"""Language models for shallow fusion in beam search, behind one small interface.

The decoder only needs to start a sentence, extend a state by one unit and close the sentence, so any
n-gram or neural LM can be plugged in by implementing three methods. All scores cross this interface as
natural-log probabilities: the acoustic model's emissions are natural logs, so converting here (KenLM
works in log10) keeps ``alpha`` meaning the same thing for every LM.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

LN_10 = math.log(10.0)


class LanguageModel(ABC):
    """A left-to-right LM queried one unit at a time.

    ``word_level`` says what a unit is. Word-level LMs are queried with whole words, which the decoder
    assembles from SentencePiece pieces (a piece starting with "▁" begins a new word), so a word is scored
    once the next word starts or the utterance ends. Unit-level LMs are queried with every emitted piece.
    """

    @property
    @abstractmethod
    def word_level(self) -> bool:
        """True when units are words, False when units are the decoder's pieces."""

    @abstractmethod
    def begin_state(self) -> Any:
        """State at the start of a sentence (after ``<s>``)."""

    @abstractmethod
    def score(self, state: Any, unit: str) -> tuple[float, Any]:
        """Natural-log probability of ``unit`` after ``state``, and the state that follows it."""

    @abstractmethod
    def end_score(self, state: Any) -> float:
        """Natural-log probability of ending the sentence (``</s>``) after ``state``."""


class KenLMLanguageModel(LanguageModel):
    """KenLM n-gram model (ARPA or binary) converted to natural logs, counting its queries.

    ``queries`` counts calls to :meth:`score` and :meth:`end_score`; the decoder reports its own per-frame
    counts in its search statistics, this total is for checking the LM side independently.
    """

    def __init__(self, path: str | Path, word_level: bool = True) -> None:
        import kenlm  # imported here so that decoding works without the optional kenlm module

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"language model not found: {path}")
        self._kenlm = kenlm
        self._model = kenlm.Model(str(path))
        self._word_level = word_level
        self.queries = 0

    @property
    def word_level(self) -> bool:
        return self._word_level

    @property
    def order(self) -> int:
        """N-gram order of the loaded model."""
        return int(self._model.order)

    def begin_state(self) -> Any:
        state = self._kenlm.State()
        self._model.BeginSentenceWrite(state)
        return state

    def score(self, state: Any, unit: str) -> tuple[float, Any]:
        self.queries += 1
        new_state = self._kenlm.State()
        log10_prob = self._model.BaseScore(state, unit, new_state)
        return log10_prob * LN_10, new_state

    def end_score(self, state: Any) -> float:
        self.queries += 1
        return self._model.BaseScore(state, "</s>", self._kenlm.State()) * LN_10
