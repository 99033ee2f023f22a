"""Decoder benchmark: every available backend on the same emissions, with output entropy swept by temperature.

Why: pruning flattens the encoder's outputs, and the question is how much that costs each decoder. Here the
flattening is emulated by dividing a trained model's log-probabilities by a temperature T (T > 1 flattens,
T < 1 sharpens) and renormalizing, so every backend decodes identical inputs whose entropy rises with T.
Without a model, peaky synthetic emissions over the model's units stand in.

Matched settings: the same beam width and beam threshold for all backends, every token tried per frame
(cutoff_top_n = vocab), no LM. Times are per-utterance medians over repeats run round-robin across backends
(machine-load drift hits all alike); the table shows their mean over utterances.

    python bench/decoders.py --model recipes/fsdd_digits/exp/baseline/model.pt \
        --manifest recipes/fsdd_digits/data/corpus/test.jsonl --limit 100 --beams 16 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from asr.checkpoint import load_model
from asr.inference import encode_batched, load_evaluation_audio, stack_emissions
from asr.metrics import error_counts
from asr.timing import DecoderSteps
from common.fileio import write_json
from common.measure import interleaved
from decoding.backends import DecoderSettings, available_backends, make_decoder
from decoding.entropy import entropy_report
from decoding.search_stats import aggregate_stats


def model_emissions(
    model_path: Path, manifest: Path, limit: int
) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """Log-probabilities of ``limit`` utterances spread over the manifest (batched once: decoding is what
    is timed)."""
    loaded = load_model(model_path)
    audio = load_evaluation_audio(manifest, loaded.recognizer.sample_rate, limit)
    log_probs, lengths = stack_emissions(encode_batched(loaded.recognizer, audio.waveforms))
    return log_probs, lengths, audio.references, loaded.tokenizer.pieces


def synthetic_emissions(pieces: list[str], count: int, frames: int = 80, seed: int = 0):
    """Peaky emissions that spell random words of the vocabulary's word pieces, with blanks between."""
    generator = torch.Generator().manual_seed(seed)
    words = [i for i, p in enumerate(pieces) if p.startswith("▁") and len(p) > 1]
    logits = torch.randn(count, frames, len(pieces), generator=generator)
    references = []
    for u in range(count):
        chosen = [
            words[int(torch.randint(len(words), (1,), generator=generator))] for _ in range(frames // 12)
        ]
        for k, token in enumerate(chosen):
            logits[u, k * 12 + 4 : k * 12 + 7, token] += 9.0
        logits[u, :, 0] += 6.0
        for k in range(len(chosen)):
            logits[u, k * 12 + 4 : k * 12 + 7, 0] -= 6.0
        references.append(" ".join(pieces[t][1:] for t in chosen))
    return torch.log_softmax(logits, -1), torch.full((count,), frames), references


def decode_interleaved(decoders: dict, log_probs: torch.Tensor, lengths: torch.Tensor, repeats: int) -> dict:
    """Every decoder timed round-robin (:func:`common.measure.interleaved`): last results, mean ms."""
    emissions = [frames[:n] for frames, n in zip(log_probs, lengths.tolist(), strict=True)]
    rounds = {name: DecoderSteps(decoder, emissions) for name, decoder in decoders.items()}
    timings = interleaved(rounds, repeats=repeats, warmup=0)
    return {name: (rounds[name].decoded, timings[name].mean_ms) for name in decoders}


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    if args.model:
        base, lengths, references, pieces = model_emissions(args.model, args.manifest, args.limit)
        source = "model"
    else:
        words = "zero one two three four five six seven eight nine".split()
        pieces = ["<blk>", "<unk>"] + [f"▁{w}" for w in words]
        base, lengths, references = synthetic_emissions(pieces, args.limit)
        source = "synthetic"
    backends = [b for b in args.backends if b in available_backends()]
    rows = []
    for beam in args.beams:
        settings = DecoderSettings(
            beam_width=beam, cutoff_top_n=len(pieces), beam_threshold=args.beam_threshold
        )
        decoders = {name: make_decoder(name, pieces, settings) for name in backends}
        for temperature in tqdm(args.temperatures, desc=f"beam {beam}", file=sys.stderr):
            log_probs = torch.log_softmax(base / temperature, dim=-1)
            entropy = entropy_report(log_probs, lengths)
            outcome = decode_interleaved(decoders, log_probs, lengths, args.repeats)
            best = {name: [r.text for r in results] for name, (results, _) in outcome.items()}
            for name, (results, mean_ms) in outcome.items():
                row = {
                    "source": source,
                    "backend": name,
                    "beam": beam,
                    "temperature": temperature,
                    "entropy_mean": round(entropy["entropy_mean"], 4),
                    "tokens_for_95pct_mean": round(entropy["tokens_for_mass_mean"], 3),
                    "wer": round(error_counts(references, best[name]).wer, 5),
                    "ms_per_utterance": round(mean_ms, 3),
                    "agree_with_own": round(
                        statistics.mean(a == b for a, b in zip(best[name], best["own"], strict=True)), 4
                    ),
                    "beam_threshold": args.beam_threshold,
                    "threads": args.threads,
                    "utterances": len(references),
                }
                if results[0].stats is not None:
                    stats = aggregate_stats([r.stats for r in results])
                    row.update(
                        {
                            "active_mean": round(stats["active_mean"], 3),
                            "extensions_per_frame": round(stats["extensions_per_frame"], 3),
                            "tokens_kept_mean": round(stats["tokens_kept_mean"], 3),
                        }
                    )
                rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    columns = [
        "backend",
        "beam",
        "temperature",
        "entropy_mean",
        "tokens_for_95pct_mean",
        "wer",
        "ms_per_utterance",
        "agree_with_own",
        "active_mean",
        "extensions_per_frame",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    print()
    for beam in sorted({r["beam"] for r in rows}):
        for temperature in sorted({r["temperature"] for r in rows}):
            at = {r["backend"]: r for r in rows if r["beam"] == beam and r["temperature"] == temperature}
            ratios = [
                f"own/{other} = {at['own']['ms_per_utterance'] / at[other]['ms_per_utterance']:.2f}"
                for other in at
                if other != "own" and at[other]["ms_per_utterance"] > 0
            ]
            print(f"beam {beam}, T={temperature}: " + ", ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="speechprune model.pt (omit for synthetic emissions)")
    parser.add_argument("--manifest", type=Path, help="manifest of the utterances to decode (with --model)")
    parser.add_argument("--limit", type=int, default=100, help="utterances to decode")
    parser.add_argument("--beams", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--backends", nargs="+", default=["own", "flashlight", "pyctcdecode", "ctcdecode"])
    parser.add_argument(
        "--beam-threshold",
        type=float,
        default=None,
        help="drop hypotheses worse than best - this (all backends); default: off. Without it "
        "the beam stays full and decoding time does not depend on entropy",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per utterance and backend")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the rows here as JSON")
    args = parser.parse_args()
    if args.model and not args.manifest:
        parser.error("--model needs --manifest")
    rows = run(args)
    print_table(rows)
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
