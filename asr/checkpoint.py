"""Saving and loading recognizers from one file, safely.

Two formats load the same way: a compact model file (what runs on a device or ships to users) and a
Lightning training checkpoint. Both carry the front-end config, the encoder's per-layer widths and the
tokenizer, so a pruned model with uneven layers needs nothing but its file. Loading uses
``torch.load(weights_only=True)``: no arbitrary pickled code runs from a downloaded model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from asr.features import FeatureConfig
from asr.models.lstm_ctc import EncoderConfig
from asr.recognizer import SpeechRecognizer
from asr.tokenizer import Tokenizer
from common.errors import SpeechpruneError
from common.fileio import atomic_open

MODEL_FORMAT = "speechprune-model"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_KEY = "speechprune"  # where a Lightning checkpoint keeps the model description


@dataclass
class LoadedModel:
    """A recognizer ready for inference (eval mode), its tokenizer and whatever metadata was saved."""

    recognizer: SpeechRecognizer
    tokenizer: Tokenizer
    metadata: dict[str, Any]


def model_description(recognizer: SpeechRecognizer, tokenizer: Tokenizer) -> dict[str, Any]:
    """Everything needed to rebuild ``recognizer`` except its weights (plain types only)."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "features": asdict(recognizer.features.config),
        "encoder": recognizer.encoder.config.to_dict(),
        "tokenizer": tokenizer.model_proto,
    }


def save_model(
    path: str | os.PathLike, recognizer: SpeechRecognizer, tokenizer: Tokenizer, metadata: dict | None = None
) -> None:
    """Write the compact model file atomically."""
    payload = model_description(recognizer, tokenizer)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in recognizer.state_dict().items()}
    payload["metadata"] = metadata or {}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load a compact model file or a Lightning checkpoint written by speechprune."""
    path = Path(path)
    if not path.is_file():
        raise SpeechpruneError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or corrupt files
        raise SpeechpruneError(f"{path}: not a loadable speechprune model ({type(error).__name__})") from None
    if not isinstance(payload, dict):
        raise SpeechpruneError(f"{path}: not a speechprune model file")
    if CHECKPOINT_KEY in payload:  # Lightning checkpoint
        description = payload[CHECKPOINT_KEY]
        prefix = "recognizer."
        state_dict = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
        metadata = {"epoch": payload.get("epoch"), "global_step": payload.get("global_step")}
    elif payload.get("format") == MODEL_FORMAT:
        description, state_dict, metadata = payload, payload["state_dict"], payload.get("metadata", {})
    else:
        raise SpeechpruneError(f"{path}: not a speechprune model file (no model description inside)")
    recognizer = build_recognizer(description)
    try:
        recognizer.load_state_dict(state_dict)
    except RuntimeError as error:
        raise SpeechpruneError(f"{path}: weights do not match the saved model shapes ({error})") from None
    recognizer.eval()
    return LoadedModel(recognizer, Tokenizer(description["tokenizer"]), metadata)


def build_recognizer(description: dict[str, Any]) -> SpeechRecognizer:
    """An untrained recognizer with the shapes of ``description`` (features and encoder configs)."""
    return SpeechRecognizer(FeatureConfig(**description["features"]), EncoderConfig(**description["encoder"]))
