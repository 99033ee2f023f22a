"""Interpolated modified Kneser–Ney n-gram LMs in ARPA format, built from training transcripts.

Beam search with an LM needs an ARPA file; KenLM's ``lmplz`` builds one but is not on pip, so the project
carries its own builder and uses ``lmplz`` only when it is on PATH. The model follows Chen & Goodman's
interpolated modified Kneser–Ney, as ``lmplz`` does:

* the highest order uses raw counts; lower orders use continuation counts (how many distinct words
  precede the n-gram), except n-grams starting with ``<s>``, which nothing can precede and which keep
  their raw counts;
* each order has three discounts D1, D2, D3+ estimated from its count-of-counts t1..t4;
* every n-gram's probability is interpolated with the next lower order, and unigrams with the uniform
  distribution over the predictable vocabulary (all words, ``</s>`` and ``<unk>``; ``<s>`` is never
  predicted and gets log10-probability -99, as KenLM expects);
* the backoff weight of a context is its interpolation weight gamma, so the ARPA is a proper backoff
  model whose distributions sum to 1 for every seen context.

Small corpora (the digits recipe) make count-of-counts vanish: when some t1..t4 of an order is 0 or the
estimated discounts leave (0, k) for count k, that order uses lmplz's ``--discount_fallback`` discounts
0.5, 1.0, 1.5. An order higher than the longest padded sentence has no n-grams at all; the model is then
written with the highest order that has any.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common.errors import SpeechpruneError
from common.fileio import atomic_open
from common.units import normalize_text
from decoding.vocabulary import PieceVocabulary

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
LOG10_ZERO = -99.0

NGram = tuple[str, ...]


@dataclass(frozen=True)
class ArpaSummary:
    """What :func:`build_arpa` wrote.

    Attributes:
        path: the ARPA file.
        backend: "own" or "lmplz".
        order: order of the written model (lower than requested if the corpus had no longer n-grams).
        ngram_counts: number of n-grams per order, unigrams first (own builder only, else empty).
        fallback_orders: orders whose discounts fell back to 0.5/1.0/1.5 (own builder only).
    """

    path: Path
    backend: str
    order: int
    ngram_counts: tuple[int, ...] = ()
    fallback_orders: tuple[int, ...] = ()


def transcript_units(
    texts: Iterable[str], unit: str, tokenizer: PieceVocabulary | None = None
) -> list[list[str]]:
    """Split transcripts into LM units: whitespace words, or the tokenizer's pieces (the decoder's units).

    Words are normalized like the transcripts the model is trained and scored on, so the LM's words match
    the decoder's output. Empty transcripts are dropped.
    """
    if unit not in ("word", "piece"):
        raise SpeechpruneError(f"LM unit must be 'word' or 'piece', not {unit!r}")
    if unit == "piece" and tokenizer is None:
        raise SpeechpruneError("a piece-level LM needs the tokenizer whose pieces the decoder emits")
    pieces = tokenizer.pieces if unit == "piece" else []
    sentences = []
    for text in texts:
        if unit == "word":
            units = normalize_text(text).split()
        else:
            units = [pieces[i] for i in tokenizer.encode(text)]
        if BOS in units or EOS in units:
            raise SpeechpruneError(f"transcript contains the reserved LM symbol {BOS} or {EOS}: {text!r}")
        if units:
            sentences.append(units)
    if not sentences:
        raise SpeechpruneError("no non-empty transcripts to build the language model from")
    return sentences


def build_arpa(
    texts: Iterable[str],
    order: int,
    out_path: str | os.PathLike,
    unit: str = "word",
    tokenizer: PieceVocabulary | None = None,
    backend: str = "auto",
) -> ArpaSummary:
    """Estimate an interpolated modified Kneser–Ney LM of ``order`` from ``texts`` and write it as ARPA.

    Args:
        texts: training transcripts, one sentence each.
        order: n-gram order, at least 2 (KenLM loads no unigram-only models).
        out_path: ARPA file to write (atomically).
        unit: "word" for whitespace words, "piece" for the tokenizer's pieces (lexicon-free decoding).
        tokenizer: required for ``unit="piece"``.
        backend: "own" (this module), "lmplz" (KenLM's builder, must be on PATH) or "auto" (lmplz when
            on PATH, else own).
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 2:
        raise SpeechpruneError(f"LM order must be an integer >= 2 (KenLM loads no unigram LM), got {order!r}")
    if backend not in ("auto", "own", "lmplz"):
        raise SpeechpruneError(f"LM backend must be 'auto', 'own' or 'lmplz', not {backend!r}")
    lmplz = shutil.which("lmplz")
    if backend == "lmplz" and lmplz is None:
        raise SpeechpruneError("lmplz is not on PATH: build KenLM (github.com/kpu/kenlm) or use backend=own")
    sentences = transcript_units(texts, unit, tokenizer)
    # n-grams longer than the longest padded sentence do not exist: such an order would be empty.
    order = min(order, max(len(units) for units in sentences) + 2)
    out_path = Path(out_path)
    if backend == "own" or lmplz is None:
        return _write_own(sentences, order, out_path)
    return _run_lmplz(lmplz, sentences, order, out_path)


def _run_lmplz(lmplz: str, sentences: list[list[str]], order: int, out_path: Path) -> ArpaSummary:
    """Build with KenLM's lmplz; ``--skip_symbols`` drops ``<unk>`` units instead of failing on them."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("".join(" ".join(units) + "\n" for units in sentences), encoding="utf-8")
        arpa = Path(tmp) / "lm.arpa"
        command = [lmplz, "-o", str(order), "--discount_fallback", "--skip_symbols", "-S", "20%"]
        command += ["--text", str(corpus), "--arpa", str(arpa)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise SpeechpruneError(f"lmplz failed building {out_path}: {' | '.join(tail)}")
        with atomic_open(out_path, "wb") as handle, arpa.open("rb") as source:
            shutil.copyfileobj(source, handle)
    return ArpaSummary(path=out_path, backend="lmplz", order=order)


def _write_own(sentences: list[list[str]], order: int, out_path: Path) -> ArpaSummary:
    model = KneserNey(sentences, order)
    with atomic_open(out_path, "w", encoding="utf-8") as handle:
        model.write_arpa(handle)
    return ArpaSummary(
        path=out_path,
        backend="own",
        order=model.order,
        ngram_counts=tuple(len(table) for table in model.log10_probs[1:]),
        fallback_orders=model.fallback_orders,
    )


def estimate_discounts(adjusted: Iterable[int]) -> tuple[float, float, float] | None:
    """Chen & Goodman's D1, D2, D3+ from count-of-counts, or None where they are undefined or invalid."""
    count_of_counts = Counter(adjusted)
    t1, t2, t3, t4 = (count_of_counts[k] for k in (1, 2, 3, 4))
    if min(t1, t2, t3, t4) == 0:
        return None
    y = t1 / (t1 + 2 * t2)
    discounts = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if not all(0.0 < d < k for k, d in enumerate(discounts, start=1)):
        return None
    return discounts


class KneserNey:
    """Interpolated modified Kneser–Ney estimates of all orders, ready to be written as ARPA.

    ``order`` must not exceed the longest sentence plus ``<s>`` and ``</s>``. ``log10_probs[n]`` and
    ``log10_backoffs[n]`` map n-grams of order n to their ARPA columns.
    """

    def __init__(self, sentences: Sequence[Sequence[str]], order: int) -> None:
        padded = [(BOS, *units, EOS) for units in sentences]
        self.order = order
        self.vocab = sorted({word for sentence in padded for word in sentence} | {UNK})
        adjusted = self._adjusted_counts(padded)
        self.fallback_orders: tuple[int, ...] = ()
        self.log10_probs: list[dict[NGram, float]] = [{}]
        gammas: list[dict[NGram, float]] = [{}]
        lower: dict[NGram, float] = {}
        for n in range(1, self.order + 1):
            probs, gamma = self._interpolate(n, adjusted[n], lower)
            self.log10_probs.append({gram: math.log10(p) for gram, p in probs.items()})
            gammas.append(gamma)
            lower = probs
        self.log10_probs[1][(BOS,)] = LOG10_ZERO
        # A context's backoff weight is the gamma with which the next order interpolates it.
        self.log10_backoffs = [
            {context: math.log10(g) for context, g in gammas[n + 1].items()} if n < self.order else {}
            for n in range(self.order + 1)
        ]

    def _adjusted_counts(self, padded: list[tuple[str, ...]]) -> list[Counter[NGram]]:
        """Raw counts at the highest order; continuation counts below, raw for n-grams starting at ``<s>``."""
        raw: list[Counter[NGram]] = [Counter() for _ in range(self.order + 1)]
        for sentence in padded:
            for n in range(1, self.order + 1):
                for start in range(len(sentence) - n + 1):
                    raw[n][sentence[start : start + n]] += 1
        adjusted: list[Counter[NGram]] = [Counter() for _ in range(self.order + 1)]
        adjusted[self.order] = raw[self.order]
        for n in range(1, self.order):
            adjusted[n] = Counter(gram[1:] for gram in raw[n + 1])
            adjusted[n].update({gram: count for gram, count in raw[n].items() if gram[0] == BOS})
        del adjusted[1][(BOS,)]
        return adjusted

    def _interpolate(
        self, n: int, counts: Counter[NGram], lower: dict[NGram, float]
    ) -> tuple[dict[NGram, float], dict[NGram, float]]:
        """Probabilities of the order-``n`` n-grams and the interpolation weight gamma of each context.

        ``lower`` holds the interpolated probabilities of order n - 1; the suffix of every order-n n-gram
        is among them, because every n-gram not starting with ``<s>`` has a left neighbour.
        """
        discounts = estimate_discounts(counts.values())
        if discounts is None:
            discounts = FALLBACK_DISCOUNTS
            self.fallback_orders += (n,)
        totals: dict[NGram, int] = defaultdict(int)
        removed: dict[NGram, float] = defaultdict(float)
        for gram, count in counts.items():
            totals[gram[:-1]] += count
            removed[gram[:-1]] += discounts[min(count, 3) - 1]
        gammas = {context: removed[context] / total for context, total in totals.items()}

        def discounted(gram: NGram) -> float:
            count = counts[gram]
            return (count - discounts[min(count, 3) - 1]) / totals[gram[:-1]] if count else 0.0

        if n == 1:
            predictable = [word for word in self.vocab if word != BOS]
            floor = gammas[()] / len(predictable)
            probs = {(word,): discounted((word,)) + floor for word in predictable}
        else:
            probs = {gram: discounted(gram) + gammas[gram[:-1]] * lower[gram[1:]] for gram in counts}
        return probs, gammas

    def write_arpa(self, handle: IO[str]) -> None:
        """Write the model in ARPA format, n-grams sorted so that equal corpora give equal files."""
        handle.write("\\data\\\n")
        for n in range(1, self.order + 1):
            handle.write(f"ngram {n}={len(self.log10_probs[n])}\n")
        for n in range(1, self.order + 1):
            handle.write(f"\n\\{n}-grams:\n")
            backoffs = self.log10_backoffs[n]
            for gram in sorted(self.log10_probs[n]):
                line = f"{self.log10_probs[n][gram]:.7f}\t{' '.join(gram)}"
                if gram in backoffs:
                    line += f"\t{backoffs[gram]:.7f}"
                handle.write(line + "\n")
        handle.write("\n\\end\\\n")
