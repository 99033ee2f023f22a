"""Every CTC beam-search decoder the project compares, behind one interface with one set of knobs.

The pruning study asks what a flatter encoder costs the decoder, and the answer must not depend on which
decoder happened to be measured. So the project's own prefix beam search and the common third-party ones
(flashlight-text, ctcdecode, pyctcdecode) are built from the same :class:`DecoderSettings`,
decode the same emissions, and return the same :class:`BackendResult` per utterance, timed the same way:
``time.perf_counter`` around the backend's decode call for that one utterance.

Each backend maps the knobs it has an exact equivalent for and refuses the others: a knob that is not at
its neutral value on a backend without it raises :class:`~common.errors.SpeechpruneError`, because a silently
ignored knob would make a comparison quietly unfair. The mappings and the semantic differences that remain
(what the beam width counts, where the LM is queried) are documented on each backend class.

Emissions are numpy arrays inside (torch tensors are accepted and converted), so that every backend but
ctcdecode runs on a device without torch.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.errors import SpeechpruneError
from common.fileio import atomic_open
from common.units import UNK_PIECE, WORD_BOUNDARY
from decoding._inputs import as_array, check_emissions
from decoding.beam_search import BeamSearchConfig, CTCBeamSearchDecoder, DecodeResult
from decoding.greedy import greedy_decode_with_timesteps
from decoding.lm import LN_10, KenLMLanguageModel
from decoding.paths import collapse_path, pieces_to_text
from decoding.search_stats import SearchStats
from decoding.vocabulary import PieceVocabulary, pieces_of

# flashlight's threshold is subtracted from the best score; "off" must stay finite there.
FLASHLIGHT_NO_THRESHOLD = 1e30


@dataclass(frozen=True)
class DecoderSettings(BeamSearchConfig):
    """The search knobs of :class:`BeamSearchConfig` plus the language model and lexicon files.

    Extending the beam-search config keeps one definition of every knob: the own decoder takes these
    settings as its config, the other backends translate them. Backends return the best hypothesis
    only, so ``nbest`` does not change their results.

    Attributes:
        lm_path: KenLM model (ARPA or binary), e.g. from :func:`decoding.arpa.build_arpa`; None = no LM.
        lm_unit: what the LM's units are: "word" (whitespace words) or "piece" (the tokenizer's pieces,
            for lexicon-free decoding).
        lexicon_path: flashlight lexicon (word, tab, spelling in pieces; see :func:`write_lexicon`); the
            search is then restricted to its words and the LM must be word-level. None = lexicon-free.
        temperature: the emissions are sharpened (T < 1) or flattened (T > 1) before the search:
            log_softmax(log_probs / T). A pruned model's flatter outputs make every beam search slower;
            T < 1 is the free lever that wins that time back without training (see
            :func:`sharpen`). 1.0 = the model's own distribution.
    """

    lm_path: Path | None = None
    lm_unit: str = "word"
    lexicon_path: Path | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lm_path", "lexicon_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)) or (
            self.temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.lm_unit not in ("word", "piece"):
            raise ValueError(f"lm_unit must be 'word' or 'piece', got {self.lm_unit!r}")
        if self.lm_path is None and (self.alpha != 0.0 or self.beta != 0.0):
            raise ValueError("alpha and beta weight a language model: set lm_path or set them to 0")
        if self.lexicon_path is not None and self.lm_path is not None and self.lm_unit != "word":
            raise ValueError("a lexicon constrains words, so its lm_unit must be 'word'")


@dataclass(frozen=True)
class BackendResult:
    """The best hypothesis of one utterance as a backend returns it.

    Attributes:
        text: words separated by single spaces (pieces joined at "▁", <unk> shown as "⁇").
        token_ids: token ids, blanks removed and repeats collapsed; None where the backend returns only
            text (pyctcdecode).
        token_frames: frame at which each token starts; None where ``token_ids`` is None.
        score: the backend's score of the hypothesis in natural-log units (see each backend for its terms).
        wall_time_s: seconds of the backend's decode call for this utterance alone.
        stats: search statistics, reported by the own decoder only.
    """

    text: str
    token_ids: list[int] | None
    token_frames: list[int] | None
    score: float
    wall_time_s: float
    stats: SearchStats | None = None


def sharpen(emissions: np.ndarray, temperature: float) -> np.ndarray:
    """``log_softmax(emissions / temperature)`` over the last axis, in float32.

    Dividing natural-log probabilities by T < 1 and renormalizing raises the best token's probability on
    every frame, so a beam threshold or probability cutoff drops more hypotheses. The ranking of tokens
    on a frame is unchanged (greedy decoding is unaffected, and refuses it), the ranking of paths is not.
    """
    if temperature == 1.0:
        return emissions
    scaled = emissions / np.float32(temperature)
    peak = scaled.max(axis=-1, keepdims=True)
    return (scaled - peak - np.log(np.exp(scaled - peak).sum(axis=-1, keepdims=True))).astype(np.float32)


def _require_neutral(backend: str, settings: DecoderSettings, vocab: int, knobs: Iterable[str]) -> None:
    """Refuse knobs that ``backend`` has no equivalent for unless they are at their neutral value."""
    neutral = {
        "cutoff_top_n": (settings.cutoff_top_n >= vocab, f"cutoff_top_n >= the vocabulary size {vocab}"),
        "cutoff_prob": (settings.cutoff_prob == 1.0, "cutoff_prob=1.0"),
        "beam_threshold": (
            settings.beam_threshold is None or math.isinf(settings.beam_threshold),
            "beam_threshold=None",
        ),
        "blank_skip_threshold": (settings.blank_skip_threshold is None, "blank_skip_threshold=None"),
        "token_min_logp": (settings.token_min_logp is None, "token_min_logp=None"),
        "beta": (settings.beta == 0.0, "beta=0"),
        "lexicon_path": (settings.lexicon_path is None, "lexicon_path=None"),
        "temperature": (settings.temperature == 1.0, "temperature=1"),
    }
    for knob in knobs:
        ok, advice = neutral[knob]
        if not ok:
            raise SpeechpruneError(
                f"the {backend} decoder has no equivalent of {knob}={getattr(settings, knob)!r}; "
                f"set {advice} to use it"
            )


class DecoderBackend(ABC):
    """One decoder library behind the common interface: ``backend(log_probs, lengths)``.

    Subclasses import their library in :meth:`_library` (so that a missing library is reported by name
    before anything is built), translate the settings in ``__init__``, decode one utterance in
    :meth:`_search` (the timed part) and turn the raw output into a :class:`BackendResult` in
    :meth:`_result` (not timed).
    """

    name: ClassVar[str]
    install_hint: ClassVar[str]

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        self.pieces = list(pieces)
        self.settings = settings
        self.blank_id = settings.blank_id
        if not 0 <= self.blank_id < len(self.pieces):
            raise ValueError(f"blank_id must lie in [0, {len(self.pieces)}), got {self.blank_id}")

    @staticmethod
    @abstractmethod
    def _library() -> Any:
        """Import and return the library entry point; raises ImportError (or OSError) if unusable."""

    @classmethod
    def import_error(cls) -> str | None:
        """Why the backend's library cannot be used here, or None if it can."""
        try:
            cls._library()
        except (ImportError, OSError, RuntimeError) as error:
            return f"{type(error).__name__}: {error}"
        return None

    def __call__(self, log_probs: Any, lengths: Any) -> list[BackendResult]:
        """Decode (batch, frames, vocab) natural-log emissions with (batch,) valid lengths, one by one
        (numpy arrays or torch tensors)."""
        valid = check_emissions(log_probs, lengths)
        if log_probs.shape[2] != len(self.pieces):
            raise ValueError(f"log_probs has vocab {log_probs.shape[2]}, the pieces {len(self.pieces)}")
        emissions = sharpen(as_array(log_probs, np.float32), self.settings.temperature)
        results = []
        for utterance, length in zip(emissions, valid, strict=True):
            frames = np.ascontiguousarray(utterance[:length])
            start = time.perf_counter()
            raw = self._search(frames)
            wall_time_s = time.perf_counter() - start
            results.append(self._result(raw, wall_time_s))
        return results

    @abstractmethod
    def _search(self, frames: np.ndarray) -> Any:
        """Decode one utterance's contiguous (frames, vocab) float32 emissions; returns the raw output."""

    @abstractmethod
    def _result(self, raw: Any, wall_time_s: float) -> BackendResult:
        """The best hypothesis of ``raw`` as a :class:`BackendResult`."""


class GreedyBackend(DecoderBackend):
    """Best-path decoding (per-frame argmax, collapse repeats, drop blanks) behind the common interface.

    The cheapest decoder and the reference for beam width 1. Knobs that only prune the beam (width,
    threshold) or the tokens tried (top-n, cutoff_prob and token_min_logp all keep the best token) cannot
    change its result and are not read; blank skipping, an LM and a lexicon would, so it refuses them
    rather than ignore them, and a temperature, which cannot change a frame's argmax, is refused too:
    a user who sets one expects an effect.
    """

    name = "greedy"
    install_hint = "it is part of speechprune"
    REFUSED_KNOBS: ClassVar[list[str]] = ["blank_skip_threshold", "beta", "lexicon_path", "temperature"]

    @staticmethod
    def _library() -> Any:
        return greedy_decode_with_timesteps

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        super().__init__(pieces, settings)
        _require_neutral(self.name, settings, len(self.pieces), self.REFUSED_KNOBS)
        if settings.lm_path is not None:
            raise SpeechpruneError("greedy decoding uses no language model: choose a beam-search decoder")

    def _search(self, frames: np.ndarray) -> tuple[list[int], list[int]]:
        return collapse_path(frames.argmax(axis=-1).tolist(), self.blank_id)

    def _result(self, raw: tuple[list[int], list[int]], wall_time_s: float) -> BackendResult:
        token_ids, token_frames = raw
        text = pieces_to_text(self.pieces, token_ids, self.blank_id)
        return BackendResult(text, token_ids, token_frames, 0.0, wall_time_s)


class OwnBackend(DecoderBackend):
    """The project's prefix beam search (:class:`CTCBeamSearchDecoder`), the only one reporting stats.

    The beam width counts distinct prefixes (alignments ending in blank and in a token share one slot).
    Score: acoustic log-probability summed over the kept alignments + alpha * LM natural-log probability
    (``</s>`` included) + beta per word (word LM) or per piece (piece LM).
    """

    name = "own"
    install_hint = "it is part of speechprune"

    @staticmethod
    def _library() -> Any:
        return CTCBeamSearchDecoder

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        super().__init__(pieces, settings)
        _require_neutral(self.name, settings, len(self.pieces), ["lexicon_path"])
        lm = None
        if settings.lm_path is not None:
            lm = KenLMLanguageModel(settings.lm_path, word_level=settings.lm_unit == "word")
        self._decoder = self._library()(settings, lm, self.pieces)

    def _search(self, frames: np.ndarray) -> DecodeResult:
        return self._decoder(frames[None], np.array([frames.shape[0]]))[0]

    def _result(self, raw: DecodeResult, wall_time_s: float) -> BackendResult:
        best = raw.best
        text = pieces_to_text(self.pieces, best.token_ids, self.blank_id)
        return BackendResult(text, best.token_ids, best.token_frames, best.score, wall_time_s, raw.stats)


def lexicon_silence(pieces: Sequence[str]) -> str:
    """The piece flashlight's lexicon decoder treats as silence between words.

    With a standalone "▁" piece (character tokenizers) that is "▁": it is what the model emits between
    words, and :func:`write_lexicon` leaves it out of the spellings. Without one, "<unk>" stands in: the
    decoder may then skip an <unk> between words, which the model rarely emits.
    """
    for piece in (WORD_BOUNDARY, UNK_PIECE):
        if piece in pieces:
            return piece
    raise SpeechpruneError(f"flashlight's lexicon decoder needs a '{WORD_BOUNDARY}' or '{UNK_PIECE}' piece")


def write_lexicon(
    path: str | Path,
    words: Iterable[str],
    tokenizer: PieceVocabulary,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write a flashlight lexicon spelling each word in the tokenizer's pieces, as the model emits it.

    ``aliases`` maps a word to other words that are decoded as it (``{"zero": ["oh"]}``: "oh" is spelled
    and written as a second spelling of "zero", so the decoder outputs "zero" for either). A leading piece
    that is the lexicon's silence (:func:`lexicon_silence`) is left out, since the decoder consumes it as
    the silence between words.
    """
    pieces = tokenizer.pieces
    silence = lexicon_silence(pieces)
    aliases = dict(aliases or {})
    unknown = sorted(set(aliases) - set(words))
    if unknown:
        raise SpeechpruneError(f"aliases for words not in the lexicon: {', '.join(unknown)}")
    lines = []
    for word in sorted(set(words)):
        for spoken in [word, *aliases.get(word, ())]:
            spelling = [pieces[i] for i in tokenizer.encode(spoken)]
            if UNK_PIECE in spelling or not spelling:
                raise SpeechpruneError(f"lexicon word {spoken!r} cannot be spelled in the tokenizer's pieces")
            if spelling[0] == silence and len(spelling) > 1:
                spelling = spelling[1:]
            lines.append(f"{word}\t{' '.join(spelling)}\n")
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path


class FlashlightBackend(DecoderBackend):
    """flashlight's CTC beam search (the flashlight-text package), lexicon-free or with a lexicon.

    Built from flashlight-text directly rather than through torchaudio's ``ctc_decoder`` wrapper (the same
    decoder objects), so that it runs on a device without torch.

    Mapping: beam_width -> beam_size, cutoff_top_n -> beam_size_token, beam_threshold -> beam_threshold
    (None -> 1e30), alpha -> lm_weight = alpha * ln 10 (flashlight weights KenLM's log10 scores, the own
    decoder natural logs), beta -> word_score (lexicon mode; lexicon-free flashlight has no per-unit
    bonus), ``log_add=True`` so that alignments of a prefix are summed as in prefix beam search.

    Lexicon-free: the LM must be piece-level; its word dictionary is the pieces themselves. The silence
    token is the blank: flashlight starts every search from its silence token, so a real piece as silence
    would make a first-frame emission of that piece continue the start state instead of becoming a token
    (and skip its LM query); with the blank, the start state is exactly the empty prefix. Lexicon mode:
    silence is :func:`lexicon_silence`; the lexicon trie holds each word's unigram LM score, smeared with
    the maximum over the words below a node (what torchaudio's wrapper does too).

    Differences that remain: flashlight keeps a prefix ending in blank and in a token as two beam
    entries, so the same beam width holds fewer distinct prefixes than the own decoder's. The lexicon
    decoder only spells lexicon words, looks the LM ahead along the lexicon trie (smearing), and returns
    to the trie root as soon as a word's last piece is read, so that piece cannot be held for a second
    frame: alignments repeating it must pass through blank or silence, which lowers the scores of
    such hypotheses (texts are rarely affected because the lexicon still forces the word).
    Score: flashlight's (acoustic summed over merged alignments + lm_weight * log10 LM + word scores).
    """

    name = "flashlight"
    install_hint = "pip install flashlight-text"

    @staticmethod
    def _library() -> Any:
        from flashlight.lib.text import decoder, dictionary

        return decoder, dictionary

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        super().__init__(pieces, settings)
        lexicon_path = settings.lexicon_path
        unsupported = ["cutoff_prob", "blank_skip_threshold", "token_min_logp"]
        unsupported += [] if lexicon_path else ["beta"]
        _require_neutral(self.name, settings, len(self.pieces), unsupported)
        if lexicon_path is None and settings.lm_path is not None and settings.lm_unit != "piece":
            raise SpeechpruneError(
                "flashlight's lexicon-free decoder queries its LM with pieces: use a piece-level LM "
                "(lm_unit='piece') or give a lexicon_path for a word LM"
            )
        fl, fl_dictionary = self._library()
        threshold = FLASHLIGHT_NO_THRESHOLD
        if settings.beam_threshold is not None:
            threshold = min(settings.beam_threshold, FLASHLIGHT_NO_THRESHOLD)
        common = {
            "beam_size": settings.beam_width,
            "beam_size_token": min(settings.cutoff_top_n, len(self.pieces)),
            "beam_threshold": threshold,
            "lm_weight": settings.alpha * LN_10,
            "sil_score": 0.0,
            "log_add": True,
            "criterion_type": fl.CriterionType.CTC,
        }
        tokens = fl_dictionary.Dictionary(self.pieces)
        if lexicon_path is None:
            silence = self.blank_id
            self._words = None
            lm = fl.ZeroLM() if settings.lm_path is None else self._kenlm(settings.lm_path, tokens)
            options = fl.LexiconFreeDecoderOptions(**common)
            self._decoder = fl.LexiconFreeDecoder(options, lm, silence, self.blank_id, [])
            return
        silence = self.pieces.index(lexicon_silence(self.pieces))
        lexicon = fl_dictionary.load_words(str(lexicon_path))
        self._words = fl_dictionary.create_word_dict(lexicon)
        lm = fl.ZeroLM() if settings.lm_path is None else self._kenlm(settings.lm_path, self._words)
        trie = fl.Trie(len(self.pieces), silence)
        start = lm.start(False)
        for word, spellings in lexicon.items():
            word_id = self._words.get_index(word)
            _, score = lm.score(start, word_id)
            for spelling in spellings:
                trie.insert([tokens.get_index(piece) for piece in spelling], word_id, score)
        trie.smear(fl.SmearingMode.MAX)
        options = fl.LexiconDecoderOptions(**common, word_score=settings.beta, unk_score=-math.inf)
        unknown = self._words.get_index(UNK_PIECE)
        self._decoder = fl.LexiconDecoder(options, trie, lm, silence, self.blank_id, unknown, [], False)

    @staticmethod
    def _kenlm(path: Path, words: Any) -> Any:
        """flashlight's KenLM over ``words`` (a flashlight Dictionary: the LM's units by id)."""
        try:
            from flashlight.lib.text.decoder.kenlm import KenLM
        except ImportError as error:
            raise SpeechpruneError(f"this flashlight-text build has no KenLM ({error})") from None
        return KenLM(str(path), words)

    def _search(self, frames: np.ndarray) -> Any:
        # The raw result keeps the label of every frame (torchaudio's wrapper would collapse them
        # together with the start and end states).
        frame_count, vocab = frames.shape
        return self._decoder.decode(frames.ctypes.data, frame_count, vocab)[0]

    def _result(self, raw: Any, wall_time_s: float) -> BackendResult:
        # The path holds one label per frame between the start and the end state.
        token_ids, token_frames = collapse_path(list(raw.tokens)[1:-1], self.blank_id)
        if self._words is None:
            text = pieces_to_text(self.pieces, token_ids, self.blank_id)
        else:
            text = " ".join(self._words.get_entry(word) for word in raw.words if word >= 0)
        return BackendResult(text, token_ids, token_frames, float(raw.score), wall_time_s)


def _word_labels(pieces: Sequence[str], blank_id: int, blank_label: str) -> tuple[list[str], bool]:
    """Labels for decoders that split words at a " " label: "▁" becomes " " when it is a piece of its own
    and no other piece carries it; returns the labels and whether that was the case."""
    labels = list(pieces)
    labels[blank_id] = blank_label
    glued = any(piece.startswith(WORD_BOUNDARY) and piece != WORD_BOUNDARY for piece in pieces)
    if WORD_BOUNDARY in pieces and not glued:
        labels[pieces.index(WORD_BOUNDARY)] = " "
        return labels, True
    return labels, False


class CTCDecodeBackend(DecoderBackend):
    """parlance's ``ctcdecode.CTCBeamDecoder`` (used when importable; it must be built from source).

    Mapping, parameter for parameter: labels, model_path = lm_path, alpha, beta, cutoff_top_n,
    cutoff_prob, beam_width, blank_id, ``log_probs_input=True``, one thread. ctcdecode has no beam
    threshold, token_min_logp or blank skipping.

    ctcdecode queries a word LM when it meets a " " label, so a word LM needs a standalone "▁" piece (it
    is given ctcdecode as " "); a piece LM needs single-character pieces (ctcdecode then treats the LM as
    character-based and queries every label). Its beam width counts prefixes like the own decoder's.
    Differences: ctcdecode scores no ``</s>``, and with a word LM it only extends prefixes spelling words
    of the LM's vocabulary. Score: minus ctcdecode's beam score (its negated acoustic log-probability).
    """

    name = "ctcdecode"
    install_hint = (
        "ctcdecode has no usable wheel here (its setup downloads Boost and OpenFST): build it from source "
        "(https://github.com/parlance/ctcdecode); it is used when importable"
    )

    @staticmethod
    def _library() -> Any:
        from ctcdecode import CTCBeamDecoder

        return CTCBeamDecoder

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        super().__init__(pieces, settings)
        unsupported = ["beam_threshold", "blank_skip_threshold", "token_min_logp", "lexicon_path"]
        _require_neutral(self.name, settings, len(self.pieces), unsupported)
        labels = list(self.pieces)
        if settings.lm_path is not None and settings.lm_unit == "word":
            labels, spaced = _word_labels(self.pieces, self.blank_id, "_")
            if not spaced:
                raise SpeechpruneError(
                    f"ctcdecode needs a standalone '{WORD_BOUNDARY}' piece and no pieces starting with it "
                    "to find the words for a word LM"
                )
        elif settings.lm_path is not None:
            specials = {self.blank_id} | {i for i, piece in enumerate(self.pieces) if piece == UNK_PIECE}
            if any(len(piece) != 1 for i, piece in enumerate(self.pieces) if i not in specials):
                raise SpeechpruneError("ctcdecode queries a piece LM per label: pieces must be characters")
        self._decoder = self._library()(
            labels,
            model_path=None if settings.lm_path is None else str(settings.lm_path),
            alpha=settings.alpha,
            beta=settings.beta,
            cutoff_top_n=min(settings.cutoff_top_n, len(self.pieces)),
            cutoff_prob=settings.cutoff_prob,
            beam_width=settings.beam_width,
            num_processes=1,
            blank_id=self.blank_id,
            log_probs_input=True,
        )

    def _search(self, frames: np.ndarray) -> Any:
        import torch  # ctcdecode's only interface is torch tensors

        return self._decoder.decode(
            torch.from_numpy(frames)[None], torch.tensor([frames.shape[0]], dtype=torch.int32)
        )

    def _result(self, raw: Any, wall_time_s: float) -> BackendResult:
        beams, scores, timesteps, lengths = raw
        length = int(lengths[0, 0])
        tokens = beams[0, 0, :length].tolist()
        starts = timesteps[0, 0, :length].tolist()
        text = pieces_to_text(self.pieces, tokens, self.blank_id)
        return BackendResult(text, tokens, starts, -float(scores[0, 0]), wall_time_s)


class PyCTCDecodeBackend(DecoderBackend):
    """Kensho's pyctcdecode (``build_ctcdecoder`` + ``decode_beams``), word LMs only.

    Mapping: beam_width, beam_threshold -> beam_prune_logp = -beam_threshold (None -> -inf),
    token_min_logp (None -> -inf, i.e. every token), alpha, beta, kenlm model = lm_path;
    ``unk_score_offset=0`` so that out-of-vocabulary words get KenLM's <unk> probability rather than an
    extra -10 on every partial word the LM does not know (the own decoder has no such penalty);
    ``lm_score_boundary=True`` (``<s>``/``</s>`` like the own decoder); ``prune_history=False``.
    Labels: the blank becomes "", a standalone "▁" becomes " " (character tokenizers); otherwise the pieces
    are passed as they are and pyctcdecode treats them as BPE.

    Differences: pyctcdecode has no top-n or cumulative-probability cutoff and clips log-probabilities
    at log(1e-15); it keeps a prefix ending in blank and in a token as two beam entries. It returns text
    only, so ``token_ids`` and ``token_frames`` are None. Score: pyctcdecode's combined score (acoustic +
    alpha * natural-log LM + beta per word).
    """

    name = "pyctcdecode"
    install_hint = "pip install pyctcdecode (or pip install 'speechprune[pyctcdecode]')"

    @staticmethod
    def _library() -> Any:
        from pyctcdecode import build_ctcdecoder

        return build_ctcdecoder

    def __init__(self, pieces: Sequence[str], settings: DecoderSettings) -> None:
        super().__init__(pieces, settings)
        unsupported = ["cutoff_top_n", "cutoff_prob", "blank_skip_threshold", "lexicon_path"]
        _require_neutral(self.name, settings, len(self.pieces), unsupported)
        if settings.lm_path is not None and settings.lm_unit != "word":
            raise SpeechpruneError("pyctcdecode fuses word LMs only: use lm_unit='word'")
        labels, _ = _word_labels(self.pieces, self.blank_id, "")
        self._decoder = self._library()(
            labels,
            kenlm_model_path=None if settings.lm_path is None else str(settings.lm_path),
            alpha=settings.alpha,
            beta=settings.beta,
            unk_score_offset=0.0,
            lm_score_boundary=True,
        )
        threshold = settings.beam_threshold
        self._beam_prune_logp = -math.inf if threshold is None else -threshold
        self._token_min_logp = -math.inf if settings.token_min_logp is None else settings.token_min_logp

    def _search(self, frames: np.ndarray) -> Any:
        beams = self._decoder.decode_beams(
            frames,
            beam_width=self.settings.beam_width,
            beam_prune_logp=self._beam_prune_logp,
            token_min_logp=self._token_min_logp,
            prune_history=False,
        )
        return beams[0]

    def _result(self, raw: Any, wall_time_s: float) -> BackendResult:
        text, _lm_state, _word_frames, _acoustic, combined = raw
        return BackendResult(" ".join(text.split()), None, None, float(combined), wall_time_s)


_BACKENDS: dict[str, type[DecoderBackend]] = {
    backend.name: backend
    for backend in (GreedyBackend, OwnBackend, FlashlightBackend, CTCDecodeBackend, PyCTCDecodeBackend)
}
BACKEND_NAMES = tuple(_BACKENDS)


def available_backends() -> list[str]:
    """Names of the backends whose libraries can be imported here, greedy and own first."""
    return [name for name, backend in _BACKENDS.items() if backend.import_error() is None]


def make_decoder(
    name: str, vocabulary: Sequence[str] | PieceVocabulary, settings: DecoderSettings | None = None
) -> DecoderBackend:
    """Build backend ``name`` over ``vocabulary`` (the pieces by id, or a tokenizer that has them).

    Raises :class:`SpeechpruneError` naming the backend for an unknown or unavailable one (with how to get
    it), naming the file for a missing LM or lexicon, and naming the knob for a setting the backend
    cannot honour.
    """
    backend = _BACKENDS.get(name)
    if backend is None:
        raise SpeechpruneError(f"unknown decoder backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    reason = backend.import_error()
    if reason is not None:
        raise SpeechpruneError(f"decoder backend {name!r} is unavailable ({reason}): {backend.install_hint}")
    settings = settings if settings is not None else DecoderSettings()
    for label, path in (("language model", settings.lm_path), ("lexicon", settings.lexicon_path)):
        if path is not None and not path.is_file():
            raise SpeechpruneError(f"{path}: no such {label} file")
    if settings.lm_path is not None:
        _check_lm_file(settings.lm_path)
    return backend(pieces_of(vocabulary), settings)


KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"


def _check_lm_file(path: Path) -> None:
    """An LM must be ARPA text (first non-empty line ``\\data\\``) or a KenLM binary: every backend's
    loader (KenLM in Python or in C++) would otherwise fail with its own traceback, or worse, crash."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(KENLM_BINARY_MAGIC):
        return
    first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
    if first != b"\\data\\":
        shown = first[:40].decode("utf-8", "replace")
        raise SpeechpruneError(f"{path}: not an ARPA or KenLM binary language model (starts with {shown!r})")
