"""An exported model (:mod:`asr.export`) run with onnxruntime and numpy alone: what runs on the device.

This module imports neither torch nor the training code, so a board needs only onnxruntime and numpy to
turn audio into CTC emissions and best-path transcripts (``bench/aarch64_check.sh`` runs it so on an
emulated arm64 userland). The export folder's files are checked against the SHA-256s of
its ``export.json`` before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asr.frontend_numpy import log_mel
from common.errors import SpeechpruneError
from decoding.paths import collapse_path, pieces_to_text

EXPORT_FORMAT = "speechprune-export"
EXPORT_VERSION = 1
MANIFEST_NAME = "export.json"
# What a study or a latency target runs a model on: the model file (torch), or its export through
# onnxruntime with the float32 or the int8 encoder.
RUNTIMES = ("torch", "onnx", "onnx-int8")


def precision_of(runtime: str) -> str:
    """The export's encoder an ONNX runtime name picks."""
    return "int8" if runtime == "onnx-int8" else "float32"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_export_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The export folder's manifest, checked (format, version, every file's SHA-256)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SpeechpruneError(f"{folder}: not an export folder (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = [manifest["filterbank"], *manifest["encoders"].values()]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        raise SpeechpruneError(f"{path}: not a speechprune export manifest ({error})") from None
    if manifest.get("format") != EXPORT_FORMAT or manifest.get("version") != EXPORT_VERSION:
        raise SpeechpruneError(f"{path}: not a speechprune export of version {EXPORT_VERSION}")
    for entry in entries:
        file = folder / str(entry["file"])
        if not file.is_file() or file_sha256(file) != entry["sha256"]:
            raise SpeechpruneError(f"{file}: missing, or its SHA-256 does not match {MANIFEST_NAME}")
    return manifest


class ExportedModel:
    """Waveform -> (frames, units) CTC log-probabilities through onnxruntime, one utterance at a time.

    ``precision`` picks the exported encoder ("float32", or "int8" when the folder has one); ``threads``
    is onnxruntime's intra-op thread count (1, as on a one-core device, unless told otherwise).
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 1, precision: str = "float32") -> None:
        import onnxruntime

        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        encoders = self.manifest["encoders"]
        if precision not in encoders:
            raise SpeechpruneError(f"{self.folder}: no {precision} encoder; it has {sorted(encoders)}")
        self.precision = precision
        self.features = self.manifest["features"]
        self.pieces: list[str] = list(self.manifest["units"])
        self.blank_id = int(self.manifest["blank_id"])
        self.sample_rate = int(self.features["sample_rate"])
        self.frame_seconds = float(self.manifest["frame_seconds"])
        self.filterbank = np.load(self.folder / self.manifest["filterbank"]["file"], allow_pickle=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(self.folder / encoders[precision]["file"]), options, providers=["CPUExecutionProvider"]
        )

    @property
    def parameters(self) -> int | None:
        """The encoder's parameter count as exported (None for exports made before it was recorded)."""
        value = self.manifest.get("parameters")
        return None if value is None else int(value)

    @property
    def frame_stride(self) -> int:
        """Samples per encoder output frame (hop x time subsampling)."""
        return int(round(self.frame_seconds * self.sample_rate))

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(frames, units) log-probabilities of each waveform, one onnxruntime run each (no padding)."""
        return [self.log_probs(np.asarray(w, dtype=np.float32)) for w in waveforms]

    def log_probs(self, waveform: np.ndarray) -> np.ndarray:
        """(frames, units) log-probabilities of one mono float32 waveform at the model's rate."""
        features = log_mel(waveform, self.features, self.filterbank)[None]
        return self.session.run(None, {"features": features})[0][0]

    def greedy_text(self, waveform: np.ndarray) -> str:
        """Best-path transcript, with the one CTC collapse and ids-to-text the torch decoders use."""
        ids, _ = collapse_path(self.log_probs(waveform).argmax(axis=-1).tolist(), self.blank_id)
        return pieces_to_text(self.pieces, ids, self.blank_id)
