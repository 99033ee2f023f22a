"""Encoder benchmark: does structured pruning's measured speedup follow its MAC reduction, and where not, why?

Prunes one encoder to several LSTM sparsities with :func:`pruning.structure.prune_encoder` (MNP ranking),
then times, per utterance at batch size 1 and an explicit thread count, the three parts of the recognizer:
log-mel features, the conv front end, and the LSTM stack + CTC head. All models are run interleaved, round by
round, and each part's time is the median over rounds. Latency of a dense model depends on its shapes, not
its weight values, so random weights stand in when no model file is given.

    python bench/encoder_scaling.py --model recipes/fsdd_digits/exp/baseline/model.pt
    python bench/encoder_scaling.py --hidden 1024 --layers 4 --unidirectional   # the paper's size
"""

from __future__ import annotations

import argparse
import time

import torch

from asr.checkpoint import load_model
from asr.features import FeatureConfig
from asr.models.lstm_ctc import EncoderConfig, count_parameters
from asr.recognizer import SpeechRecognizer
from common.measure import interleaved
from pruning.cost import encoder_macs_per_second
from pruning.criteria import MagnitudeCriterion, PruningContext
from pruning.selection import keep_top_units
from pruning.structure import prune_encoder, unit_groups

PARTS = ("features", "conv", "lstm+head")


def pruned_recognizers(base: SpeechRecognizer, sparsities: list[float]) -> dict[float, SpeechRecognizer]:
    encoder = base.encoder
    original = unit_groups(encoder)
    scores = MagnitudeCriterion().scores(encoder, PruningContext())
    lstm_groups = [g for g in original if g.startswith("lstm.")]
    models = {}
    for sparsity in sparsities:
        recognizer = SpeechRecognizer(base.features.config, encoder.config)
        recognizer.load_state_dict(base.state_dict())
        plan = keep_top_units(encoder, scores, original, sparsity, lstm_groups)
        recognizer.encoder = prune_encoder(encoder, plan)
        models[sparsity] = recognizer.eval()
    return models


@torch.inference_mode()
def time_parts(recognizer: SpeechRecognizer, waveform: torch.Tensor) -> list[float]:
    """Seconds in each of ``PARTS`` of one forward pass: a round of :func:`common.measure.interleaved`."""
    lengths = torch.tensor([waveform.shape[0]])
    started = time.perf_counter()
    features, frames = recognizer.features(waveform[None], lengths)
    featured = time.perf_counter()
    hidden, frames_out = recognizer.encoder.frontend(features, frames)
    convolved = time.perf_counter()
    encoder = recognizer.encoder
    *_, hidden = encoder.lstm_outputs(hidden, frames_out.clamp(min=1, max=hidden.shape[1]))
    torch.log_softmax(encoder.head(hidden), dim=-1)
    finished = time.perf_counter()
    return [featured - started, convolved - featured, finished - convolved]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a speechprune model.pt (default: random weights of the given shape)")
    parser.add_argument("--hidden", type=int, default=192, help="LSTM units per layer (no --model)")
    parser.add_argument("--layers", type=int, default=2, help="LSTM layers (no --model)")
    parser.add_argument("--unidirectional", action="store_true", help="unidirectional LSTMs (no --model)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 0.85])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=2.6, help="utterance length (FSDD strings: ~2.6 s)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    if args.model:
        base = load_model(args.model).recognizer
    else:
        torch.manual_seed(0)
        features = FeatureConfig(n_mels=40)
        config = EncoderConfig(
            input_dim=40,
            vocab_size=28,
            lstm_hidden=[args.hidden] * args.layers,
            bidirectional=not args.unidirectional,
        )
        base = SpeechRecognizer(features, config)
    models = pruned_recognizers(base.eval(), args.sparsities)
    waveform = 0.1 * torch.randn(
        int(args.seconds * base.sample_rate), generator=torch.Generator().manual_seed(1)
    )
    macs = {s: encoder_macs_per_second(m.encoder, m.features.config) for s, m in models.items()}
    print(
        f"encoder {base.encoder.config.lstm_hidden} bidirectional={base.encoder.config.bidirectional}, "
        f"{args.seconds} s utterance, medians of {args.repeats} interleaved rounds"
    )
    print(
        "| threads | LSTM sparsity | params | MMAC/s | features ms | conv ms | lstm+head ms | total ms | "
        "MAC reduction | measured speedup | lstm+head speedup |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        rounds = {s: (lambda m=m: time_parts(m, waveform)) for s, m in models.items()}
        timings = interleaved(rounds, repeats=args.repeats, threads=threads)
        medians = {s: dict(zip(PARTS, t.median_ms, strict=True)) for s, t in timings.items()}
        base_sparsity = args.sparsities[0]
        for sparsity, parts in medians.items():
            total = sum(parts.values())
            base_total = sum(medians[base_sparsity].values())
            print(
                f"| {threads} | {sparsity:.0%} | {count_parameters(models[sparsity].encoder):,} | "
                f"{macs[sparsity] / 1e6:.1f} | {parts['features']:.2f} | {parts['conv']:.2f} | "
                f"{parts['lstm+head']:.2f} | {total:.2f} | {macs[base_sparsity] / macs[sparsity]:.2f} | "
                f"{base_total / total:.2f} | {medians[base_sparsity]['lstm+head'] / parts['lstm+head']:.2f} |"
            )


if __name__ == "__main__":
    main()
