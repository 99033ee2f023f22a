"""Saving and loading recognizers from one file, safely.

Two formats load the same way: a compact model file (what runs on a device or ships to users) and a
Lightning training checkpoint. Both carry the front-end config, the encoder's per-layer widths and the
tokenizer, so a pruned model with uneven layers needs nothing but its file. Loading uses
``torch.load(weights_only=True)``: no arbitrary pickled code runs from a downloaded model.

A model file is checked when it is loaded, so that a broken one is refused with one line instead of
transcribing silence: its SHA-256 content digest (over the description and every weight, written by
:func:`save_model`) must match, every weight must be finite, the CTC head must have one output per
tokenizer unit, and the front-end settings must make sense.
"""

from __future__ import annotations

import hashlib
import json
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
VALIDATION_ERRORS_KEY = "validation_errors"  # a checkpoint's last validation: word errors by kind
NOT_DIGESTED = ("tokenizer", "sha256", "state_dict", "metadata")  # digested apart, or not the model


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


def content_digest(description: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's description and weights (names, dtypes, shapes, bytes), not of its metadata:
    two files hold the same model exactly when their digests agree."""
    digest = hashlib.sha256()
    plain = {k: v for k, v in description.items() if k not in NOT_DIGESTED}
    digest.update(json.dumps(plain, sort_keys=True, default=str).encode())
    digest.update(bytes(description["tokenizer"]))
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_digest(recognizer: SpeechRecognizer, tokenizer: Tokenizer) -> str:
    """:func:`content_digest` of an in-memory model: what :func:`save_model` would record for it."""
    return content_digest(model_description(recognizer, tokenizer), recognizer.state_dict())


def save_model(
    path: str | os.PathLike, recognizer: SpeechRecognizer, tokenizer: Tokenizer, metadata: dict | None = None
) -> None:
    """Write the compact model file atomically, with its content digest."""
    payload = model_description(recognizer, tokenizer)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in recognizer.state_dict().items()}
    payload["metadata"] = metadata or {}
    payload["sha256"] = content_digest(payload, payload["state_dict"])
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
        weights = payload.get("state_dict")
        state_dict = (
            {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            if isinstance(weights, dict)
            else None
        )
        metadata = {
            "epoch": payload.get("epoch"),
            "global_step": payload.get("global_step"),
            VALIDATION_ERRORS_KEY: payload.get(VALIDATION_ERRORS_KEY),
        }
    elif payload.get("format") == MODEL_FORMAT:
        description, state_dict, metadata = payload, payload.get("state_dict"), payload.get("metadata", {})
    else:
        raise SpeechpruneError(f"{path}: not a speechprune model file (no model description inside)")
    if not isinstance(description, dict) or not isinstance(state_dict, dict) or not state_dict:
        raise SpeechpruneError(f"{path}: no weights (state_dict) in the model file")
    if description.get("sha256") and content_digest(description, state_dict) != description["sha256"]:
        raise SpeechpruneError(f"{path}: content digest mismatch: the file is corrupt or was edited")
    try:
        recognizer = build_recognizer(description)
        tokenizer = Tokenizer(description["tokenizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, SpeechpruneError) as error:
        raise SpeechpruneError(f"{path}: the model description is invalid ({error})") from None
    try:
        recognizer.load_state_dict(state_dict)
    except RuntimeError as error:  # torch lists every mismatch, a line each: name the first
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        first = details[0].rstrip(".") if details else str(error)
        more = f" and {len(details) - 1} more" if len(details) > 1 else ""
        raise SpeechpruneError(
            f"{path}: weights do not match the saved model shapes ({first}{more})"
        ) from None
    broken = [name for name, tensor in state_dict.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise SpeechpruneError(f"{path}: non-finite weights (NaN or inf) in {', '.join(broken[:3])}")
    if recognizer.encoder.config.vocab_size != tokenizer.vocab_size:
        raise SpeechpruneError(
            f"{path}: the CTC head has {recognizer.encoder.config.vocab_size} outputs but the tokenizer "
            f"{tokenizer.vocab_size} units"
        )
    recognizer.eval()
    return LoadedModel(recognizer, tokenizer, metadata)


def build_recognizer(description: dict[str, Any]) -> SpeechRecognizer:
    """An untrained recognizer with the shapes of ``description`` (features and encoder configs)."""
    return SpeechRecognizer(FeatureConfig(**description["features"]), EncoderConfig(**description["encoder"]))
