"""Write the weights a weight-averaged fit was training (not the average) as a checkpoint of their own.

Averaging changes no training step, so these are the weights the same fit without averaging ends with:
evaluating both checkpoints of one run measures what averaging adds, free of the run-to-run spread that
two trainings would bring (docs/new_voices.md).

    python local/trained_weights.py exp/loso/ema_t44/nicolas/checkpoints/last.ckpt \\
        --out exp/loso/ema_t44/nicolas/checkpoints/last_trained.ckpt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.weight_averaging import write_trained_weights_checkpoint
from common.errors import SpeechpruneError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a fit with weight_averaging")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint to write")
    args = parser.parse_args()
    try:
        print(write_trained_weights_checkpoint(args.checkpoint, args.out))
    except SpeechpruneError as error:
        print(f"trained_weights.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
