"""Calibration speech for the latency search: validation utterances, plus the same ones with added noise.

Decoder cost depends on how sure the encoder is, and that depends on the speech: on clean in-domain
recordings the digits model is so sure that the decoder costs almost nothing, while on new voices and
rooms its outputs flatten and the decoder slows down several-fold. A search calibrated on clean speech
alone underestimates the deployed decoder's cost, so this mixes in noisy copies (SNR drawn per utterance
from --snr-db). The test splits are left out so that the search's choices never see them.

    python local/make_calibration.py data/corpus/valid.jsonl --out data/corpus/calibration.jsonl
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from pathlib import Path

import torch

from asr.audio import load_audio, write_wav
from asr.augment import add_noise
from asr.data.manifest import read_manifest, write_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="clean utterances (the validation split)")
    parser.add_argument("--out", type=Path, required=True, help="calibration manifest to write")
    parser.add_argument("--count", type=int, default=100, help="clean utterances taken (and as many noisy)")
    parser.add_argument("--snr-db", type=float, nargs=2, default=[5.0, 15.0], help="noise SNR range in dB")
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)  # the noise itself
    clean = read_manifest(args.manifest)
    clean = [clean[int(i * len(clean) / args.count)] for i in range(min(args.count, len(clean)))]
    noisy_dir = args.out.parent / "calibration_noisy"
    noisy = []
    for index, utterance in enumerate(clean):
        path = noisy_dir / f"noisy_{index:04d}.wav"
        if not path.is_file():
            waveform = load_audio(utterance.audio_filepath, args.sample_rate)
            write_wav(path, add_noise(waveform, rng.uniform(*args.snr_db)), args.sample_rate)
        else:
            rng.uniform(*args.snr_db)  # keep the draws aligned when resuming
        noisy.append(replace(utterance, audio_filepath=str(path.resolve())))
    write_manifest(args.out, clean + noisy)
    print(f"{args.out}: {len(clean)} clean + {len(noisy)} noisy utterances")


if __name__ == "__main__":
    main()
