"""Training throughput by torch thread count: how many threads should a CPU-budgeted training use here?

Why: the recipe trains for a fixed wall-clock budget (44 minutes), so steps per second decide how many
epochs it gets. On a 2-core machine torch's threads compete with the data loader's worker, which decodes
and augments the audio (speed, pitch, noise, VTLP) beside the training step: more torch threads can make
training slower. Each candidate is a short Lightning fit of the same config (same batches, same loader
worker, validation off) at one thread count; fits are interleaved and rotated round by round through
:func:`common.measure.interleaved`, and the first steps of each fit (worker start-up) are not timed.
A second copy of the first candidate gives the noise floor of the comparison.

    cd recipes/fsdd_digits && python ../../bench/train_threads.py --config conf/train.yaml --threads 1 2
"""

from __future__ import annotations

import argparse
import logging
import time

import lightning as L
import torch

from asr.config import load_config
from asr.training import build_training
from common.measure import cpu_model, interleaved


class StepClock(L.Callback):
    """Seconds of each training step after the first ``skip`` (data wait included, as in training)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def seconds(self) -> list[float]:
        ends = self.ends[self.skip :]
        return [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]


def fit_round(config: dict, threads: int, steps: int, skip: int):
    """One timed fit of ``skip + steps + 1`` steps at ``threads`` torch threads: a round of the harness."""

    def round_() -> list[float]:
        module, datamodule = build_training({**config, "threads": threads})
        clock = StepClock(skip)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=skip + steps + 1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
            **{k: config["trainer"][k] for k in ("precision", "gradient_clip_val") if k in config["trainer"]},
        )
        trainer.fit(module, datamodule=datamodule)
        return clock.seconds()

    return round_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a train config (the recipe's conf/train.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    parser.add_argument("--skip", type=int, default=5, help="untimed steps at the start of each fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits per candidate")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one fit per round: no banners
    config = load_config(args.config, args.set)
    names = [f"{n} thread{'s' * (n > 1)}" for n in args.threads]
    candidates = {
        name: fit_round(config, n, args.steps, args.skip) for name, n in zip(names, args.threads, strict=True)
    }
    candidates[f"{names[0]} (copy)"] = fit_round(config, args.threads[0], args.steps, args.skip)
    print(f"{cpu_model()}, torch {torch.__version__}, data.num_workers={config['data'].get('num_workers')}")
    results = interleaved(candidates, repeats=args.repeats, warmup=0)
    reference = results[names[0]].mean_ms
    print("| candidate | median s/step (mean over steps) | steps/s | time per step against the first |")
    print("|---|---|---|---|")
    for name, measurement in results.items():
        seconds = measurement.mean_ms / 1000
        print(f"| {name} | {seconds:.3f} | {1 / seconds:.2f} | {measurement.mean_ms / reference:.3f} |")
    copy = results[f"{names[0]} (copy)"].mean_ms / reference
    print(f"noise floor: the copy of '{names[0]}' read {abs(copy - 1) * 100:.1f}% off it")


if __name__ == "__main__":
    main()
