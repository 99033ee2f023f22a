"""Prefix storage for CTC prefix beam search, with the language-model bookkeeping of each prefix.

Each distinct label prefix is one integer node; a child is found by its key ``parent * vocab + token`` in
a flat dict. Integer ids keep the per-frame tables cheap (no tuple copies as prefixes grow). Most
candidates of a frame are pruned at once, so the search creates nodes only for survivors and refers to
the others by key. LM results are cached per key, so no prefix is sent to the LM twice however often
alignments reach it, and the LM query count measures the distinct prefixes (or, for a word-level LM, the
distinct completed words in context) the search had to score.
"""

from __future__ import annotations

from common.units import WORD_BOUNDARY
from decoding.lm import LanguageModel

ROOT = 0


class PrefixTrie:
    """Tree of label prefixes of one utterance.

    Per node it stores the parent, the last token, the frame at which that token starts, and the fused
    LM term (``alpha`` * LM log-prob + ``beta`` per word or unit) accumulated along the prefix. For a
    word-level LM it also keeps the LM state after the last completed word and the pieces of the word
    still being spelled, which is scored only when the next word starts or at the end.
    """

    def __init__(
        self,
        vocab: int,
        lm: LanguageModel | None = None,
        pieces: list[str] | None = None,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> None:
        if lm is not None and (pieces is None or len(pieces) != vocab):
            raise ValueError(f"an LM needs tokens (pieces) for all {vocab} vocabulary entries")
        self.vocab = vocab
        self.lm = lm
        self.pieces = pieces
        self.alpha = alpha
        self.beta = beta
        self.children: dict[int, int] = {}
        self.parent: list[int] = [-1]
        self.last: list[int] = [-1]
        self.timestep: list[int] = [-1]
        self.entry_logp: list[float] = [0.0]
        self.fusion: list[float] = [0.0]
        self.lm_state: list[object] = [lm.begin_state() if lm is not None else None]
        self.partial_word: list[str] = [""]
        self._extensions: dict[int, tuple[float, object, str]] = {}
        self.lm_queries = 0

    def extension_fusion(self, key: int) -> float:
        """Fused LM term of the prefix ``key`` = parent * vocab + token, which has no node yet.

        The search calls this for every new candidate before pruning; the LM result is cached per
        extension, so a candidate pruned now and reached again later costs no second LM query.
        """
        scored = self._extensions.get(key)
        if scored is None:
            scored = self._extensions[key] = self._score_extension(key)
        return scored[0]

    def _score_extension(self, key: int) -> tuple[float, object, str]:
        """Fused term, LM state and unfinished word after appending the token of ``key`` to its parent."""
        parent, token = divmod(key, self.vocab)
        fusion = self.fusion[parent]
        state = self.lm_state[parent]
        partial = self.partial_word[parent]
        if self.lm is None:
            return fusion, state, partial
        piece = self.pieces[token]
        if not self.lm.word_level:
            bonus, state = self._query(state, piece)
            fusion += bonus
        elif piece.startswith(WORD_BOUNDARY):
            if partial:
                bonus, state = self._query(state, partial)
                fusion += bonus
            partial = piece[len(WORD_BOUNDARY) :]
        else:
            partial += piece
        return fusion, state, partial

    def add(self, key: int, frame: int, entry_logp: float) -> int:
        """Create the node of the prefix ``key`` = parent * vocab + token, first entered at ``frame``.

        ``entry_logp`` is the log-probability of the alignments entering the token at ``frame``; the
        search moves the node's start frame to a later entry only if that entry is more probable.
        """
        fusion, state, partial = self._extensions.pop(key, None) or self._score_extension(key)
        parent, token = divmod(key, self.vocab)
        node = len(self.parent)
        self.children[key] = node
        self.parent.append(parent)
        self.last.append(token)
        self.timestep.append(frame)
        self.entry_logp.append(entry_logp)
        self.fusion.append(fusion)
        self.lm_state.append(state)
        self.partial_word.append(partial)
        return node

    def _query(self, state: object, unit: str) -> tuple[float, object]:
        """Fused score of one LM unit (alpha * log-prob + beta) and the LM state after it."""
        logp, new_state = self.lm.score(state, unit)
        self.lm_queries += 1
        return self.alpha * logp + self.beta, new_state

    def final_fusion(self, node: int) -> float:
        """Fused LM term of a complete hypothesis: scores the unfinished last word and ``</s>``."""
        if self.lm is None:
            return 0.0
        fusion = self.fusion[node]
        state = self.lm_state[node]
        if self.lm.word_level and self.partial_word[node]:
            bonus, state = self._query(state, self.partial_word[node])
            fusion += bonus
        self.lm_queries += 1
        return fusion + self.alpha * self.lm.end_score(state)

    def path(self, node: int) -> tuple[list[int], list[int]]:
        """Token ids and start frames from the root to ``node``."""
        tokens: list[int] = []
        frames: list[int] = []
        while node != ROOT:
            tokens.append(self.last[node])
            frames.append(self.timestep[node])
            node = self.parent[node]
        return tokens[::-1], frames[::-1]
