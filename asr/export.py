"""Export a (pruned) model for a device: the encoder as ONNX, the front end's constants, the units.

The folder holds ``encoder.onnx`` (features -> CTC log-probabilities, dynamic time axis, opset 17),
optionally ``encoder.int8.onnx`` (onnxruntime's dynamic int8 quantization of the LSTM and linear
weights, stacked on the pruning), ``mel_filterbank.npy`` and ``export.json``: the feature settings, the
CTC units and blank id, the frame duration, every file's SHA-256 and the source model's content digest.
The front end runs in numpy on the device (:mod:`asr.frontend_numpy`): torch's STFT does not export to
ONNX with complex outputs, and numpy gives the same numbers. Nothing in the folder is pickled.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr.checkpoint import load_model, model_digest
from asr.models.lstm_ctc import count_parameters
from asr.onnx_model import EXPORT_FORMAT, EXPORT_VERSION, MANIFEST_NAME, file_sha256
from common.errors import SpeechpruneError
from common.fileio import atomic_open, write_json

OPSET = 17


class EncoderGraph(torch.nn.Module):
    """The encoder for one utterance: (1, frames, n_mels) features -> (1, out_frames, units) log-probs."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long)
        return self.encoder(features, lengths)[0]


def export_model(model_path: str | os.PathLike, out_dir: str | os.PathLike, int8: bool = False) -> Path:
    """Write the export folder; returns the path of its ``export.json``."""
    loaded = load_model(model_path)
    recognizer, out_dir = loaded.recognizer.eval(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = EncoderGraph(recognizer.encoder).eval()
    example, _ = recognizer.features(
        torch.zeros(1, recognizer.sample_rate), torch.tensor([recognizer.sample_rate])
    )
    encoder_path = out_dir / "encoder.onnx"
    with atomic_open(encoder_path, "wb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on packed sequences and traced sizes
        torch.onnx.export(
            graph,
            (example,),
            handle,
            input_names=["features"],
            output_names=["log_probs"],
            dynamic_axes={"features": {1: "frames"}, "log_probs": {1: "out_frames"}},
            opset_version=OPSET,
            dynamo=False,
        )
    filterbank = recognizer.features.mel_scale.fb.detach().cpu().numpy().astype(np.float32)
    with atomic_open(out_dir / "mel_filterbank.npy", "wb") as handle:
        np.save(handle, filterbank, allow_pickle=False)
    files = {"float32": encoder_path.name}
    if int8:
        files["int8"] = _quantize(encoder_path, out_dir / "encoder.int8.onnx").name
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "source_model": str(model_path),
        "source_sha256": model_digest(recognizer, loaded.tokenizer),
        "features": asdict(recognizer.features.config),
        "units": loaded.tokenizer.pieces,
        "blank_id": loaded.tokenizer.blank_id,
        "frame_seconds": recognizer.features.config.hop_ms / 1000 * recognizer.encoder.config.subsampling,
        "widths": recognizer.encoder.config.lstm_hidden,
        "parameters": count_parameters(recognizer.encoder),
        "opset": OPSET,
        "filterbank": {"file": "mel_filterbank.npy", "sha256": file_sha256(out_dir / "mel_filterbank.npy")},
        "encoders": {k: {"file": v, "sha256": file_sha256(out_dir / v)} for k, v in files.items()},
    }
    write_json(out_dir / MANIFEST_NAME, manifest)
    return out_dir / MANIFEST_NAME


def _quantize(source: Path, target: Path) -> Path:
    """onnxruntime's dynamic quantization of the LSTM and linear layers: int8 weights, activations
    quantized on the fly. The conv front end stays float32: its ConvInteger kernel is missing from
    onnxruntime's arm64 CPU builds (1.19), and the LSTMs hold the weights and the time."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise SpeechpruneError(
            f"int8 export needs onnxruntime with its quantization tools ({error})"
        ) from None
    tmp = target.with_name(f".{target.name}.tmp")
    quantize_dynamic(
        str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul", "Gemm"]
    )
    os.replace(tmp, target)
    return target
