"""Where a search's fine-tunes run: in this process one after another, or as Ray tasks on a cluster.

Fine-tuning is what a search spends its time on, and the children of a level (like the budgets' final
fine-tunes) are independent of each other, so they can run at once on other machines. Latency is never
measured here: the search times a level's candidates on its target once all of them are fine-tuned, so no
fine-tune shares the CPU with a timing (with Ray, keep the target off the worker machines, or use a board).

With Ray, a candidate's model file travels to the worker and back through Ray's object store, so the
experiment folder needs no shared file system; the training manifests' audio must be readable at the same
paths on every worker, which must have speechprune installed. The fine-tune cache stays on the host: a
cached fine-tune is copied here, not sent out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import SpeechpruneError
from common.fileio import atomic_open
from speechprune.search.finetune import FineTuner, copy_model


@dataclass(frozen=True)
class FineTuneJob:
    """Fine-tune ``model_in`` for ``batches`` batches seeded by ``seed``; write ``model_out``."""

    model_in: Path
    model_out: Path
    batches: int
    seed: int


class FineTunes(ABC):
    """Runs fine-tune jobs; :meth:`run` yields each job once its output is written."""

    def __init__(self, tuner: FineTuner) -> None:
        self.tuner = tuner

    @abstractmethod
    def run(self, jobs: Sequence[FineTuneJob]) -> Iterator[FineTuneJob]:
        """Every job, in the order they finish (the caller records each one as it comes)."""

    def one(self, job: FineTuneJob) -> None:
        for _ in self.run([job]):
            pass


class InProcess(FineTunes):
    """One after another in this process: the default, and what a single machine should use."""

    def run(self, jobs: Sequence[FineTuneJob]) -> Iterator[FineTuneJob]:
        for job in jobs:
            self.tuner(job.model_in, job.model_out, job.batches, job.seed)
            yield job


class RayTasks(FineTunes):
    """Each fine-tune a Ray task of ``cpus_per_task`` CPUs, on the cluster at ``address`` ("auto": the one
    this machine belongs to; empty: a new Ray instance on this machine's CPUs)."""

    def __init__(self, tuner: FineTuner, address: str = "", cpus_per_task: int = 1) -> None:
        super().__init__(tuner)
        try:
            import ray
        except ImportError:
            raise SpeechpruneError(
                "search.executor ray needs Ray, which this install lacks: pip install 'speechprune[ray]'"
            ) from None
        if not ray.is_initialized():
            try:
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise SpeechpruneError(f"search.ray_address {address!r}: {error}") from None
        self.ray = ray
        self.recipe = ray.put(worker_recipe(tuner))
        self.task = ray.remote(num_cpus=cpus_per_task, max_retries=1)(fine_tune_on_worker)

    def run(self, jobs: Sequence[FineTuneJob]) -> Iterator[FineTuneJob]:
        pending: dict[Any, tuple[FineTuneJob, Path | None]] = {}
        cached: list[tuple[FineTuneJob, Path]] = []
        try:
            for job in jobs:  # everything goes out before anything is handed back
                entry = self.tuner.cache_entry(job.model_in, job.batches, job.seed)
                if entry is not None and entry.is_file():
                    cached.append((job, entry))
                    continue
                ref = self.task.remote(self.recipe, job.model_in.read_bytes(), job.batches, job.seed)
                pending[ref] = (job, entry)
            for job, entry in cached:
                copy_model(entry, job.model_out)
                yield job
            while pending:
                (done,), _ = self.ray.wait(list(pending), num_returns=1)
                job, entry = pending.pop(done)
                try:
                    self._keep(job, entry, self.ray.get(done))
                except self.ray.exceptions.RayError as error:
                    self._keep_finished(pending)
                    cause = getattr(error, "cause", None) or error
                    raise SpeechpruneError(
                        f"fine-tune of {job.model_in} failed on a Ray worker: {cause}"
                    ) from None
                yield job
        finally:  # the caller stopped (an error, Ctrl-C): no fine-tune may go on beside its timings
            for ref in pending:
                self.ray.cancel(ref)

    def _keep(self, job: FineTuneJob, entry: Path | None, model: bytes) -> None:
        with atomic_open(job.model_out, "wb") as handle:
            handle.write(model)
        if entry is not None:
            copy_model(job.model_out, entry)

    def _keep_finished(self, pending: dict[Any, tuple[FineTuneJob, Path | None]]) -> None:
        """Before failing: cache the fine-tunes that did finish, so that a rerun does not redo them."""
        finished, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in finished:
            job, entry = pending.pop(ref)
            if entry is not None:
                try:
                    self._keep(job, entry, self.ray.get(ref))
                except self.ray.exceptions.RayError:
                    pass  # failed too: the error raised names the first one


def worker_recipe(tuner: FineTuner) -> dict[str, Any]:
    """What a worker on another machine needs to build the same fine-tuner: the config with absolute
    manifest paths (a worker's working folder is wherever Ray started it) and the thread count this
    process trains with (so a fine-tune does not depend on where it ran), the tokenizer, and the
    distillation teacher's bytes (only when the term is distillation)."""
    import torch

    config = copy.deepcopy(tuner.config)
    config["threads"] = config.get("threads") or torch.get_num_threads()
    data = config.get("data") or {}
    if data.get("train_manifests"):
        data["train_manifests"] = [str(Path(m).resolve()) for m in data["train_manifests"]]
    if data.get("valid_manifest"):
        data["valid_manifest"] = str(Path(data["valid_manifest"]).resolve())
    teacher = None
    if tuner.regularizer.kind == "distillation" and tuner.regularizer.teacher:
        teacher = Path(tuner.regularizer.teacher).read_bytes()
        config["regularizer"] = {k: v for k, v in (config.get("regularizer") or {}).items() if k != "teacher"}
    return {
        "config": config,
        "tokenizer": tuner.tokenizer.model_proto,
        "sample_rate": tuner.sample_rate,
        "teacher": teacher,
    }


_WORKER_TUNERS: dict[str, FineTuner] = {}  # per worker process: built once, reused by its next tasks


def fine_tune_on_worker(recipe: dict[str, Any], model: bytes, batches: int, seed: int) -> bytes:
    """A Ray task: the fine-tuned model file's bytes. The worker builds the search's fine-tuner once (its
    datamodule reads the manifests) and keeps it for the next task."""
    from asr.tokenizer import Tokenizer

    settings = json.dumps([recipe["config"], recipe["sample_rate"]], sort_keys=True, default=str).encode()
    key = hashlib.sha256(settings + recipe["tokenizer"] + (recipe["teacher"] or b"")).hexdigest()
    if key not in _WORKER_TUNERS:
        teacher = None
        if recipe["teacher"] is not None:  # one copy per machine and teacher, however many workers
            teacher = Path(tempfile.gettempdir()) / f"speechprune-teacher-{key[:16]}.pt"
            if not teacher.is_file():
                with atomic_open(teacher, "wb") as handle:
                    handle.write(recipe["teacher"])
        tokenizer = Tokenizer(recipe["tokenizer"])
        _WORKER_TUNERS[key] = FineTuner(recipe["config"], tokenizer, recipe["sample_rate"], teacher=teacher)
    with tempfile.TemporaryDirectory(prefix="speechprune-task-") as scratch:
        model_in, model_out = Path(scratch) / "in.pt", Path(scratch) / "out.pt"
        model_in.write_bytes(model)
        _WORKER_TUNERS[key].train(model_in, model_out, batches, seed)
        return model_out.read_bytes()


def make_fine_tunes(tuner: FineTuner, executor: str, address: str = "", cpus_per_task: int = 1) -> FineTunes:
    """The ``search.executor`` setting's runner of fine-tunes."""
    if executor == "ray":
        return RayTasks(tuner, address, cpus_per_task)
    return InProcess(tuner)
