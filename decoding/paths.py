"""CTC label paths to text, in plain Python: the part of decoding that a device runtime without torch
needs too (best path from any argmax, the one CTC collapse, the one ids-to-text)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from common.units import UNK_PIECE, WORD_BOUNDARY


def collapse_path(path: Iterable[int], blank_id: int) -> tuple[list[int], list[int]]:
    """CTC-collapse a frame-level label path into token ids and the frame at which each token starts.

    A token starts where its run of identical labels starts; blanks separate repeats and are dropped.
    """
    token_ids: list[int] = []
    token_frames: list[int] = []
    previous = blank_id
    for frame, label in enumerate(path):
        if label != previous and label != blank_id:
            token_ids.append(label)
            token_frames.append(frame)
        previous = label
    return token_ids, token_frames


def pieces_to_text(pieces: Sequence[str], ids: Iterable[int], blank_id: int = 0) -> str:
    """Text of token ids: the same words SentencePiece decodes, with whitespace normalized.

    One function for every backend that returns ids, so that their texts compare equal exactly when
    their words do.
    """
    text = "".join(" ⁇ " if pieces[i] == UNK_PIECE else pieces[i] for i in ids if i != blank_id)
    return " ".join(text.replace(WORD_BOUNDARY, " ").split())
