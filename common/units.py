"""Output-unit conventions shared by the tokenizer (asr) and the decoders (decoding).

The CTC blank is id 0 and is SentencePiece's padding piece renamed; "<unk>" is id 1; a word starts at a
piece beginning with "▁". Kept below both layers so that the decoders need not import the tokenizer.
"""

BLANK_ID = 0
BLANK_PIECE = "<blk>"
UNK_ID = 1
UNK_PIECE = "<unk>"
WORD_BOUNDARY = "▁"


def normalize_text(text: str) -> str:
    """Lower-case and collapse white space: the form transcripts are trained, decoded and scored in."""
    return " ".join(text.lower().split())
