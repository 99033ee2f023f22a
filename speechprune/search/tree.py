"""Archtree-style latency-budgeted tree search over layer widths, with latency measured on the target.

From each kept candidate, one child per unit group removes ``step`` of that group's original units (the
ones the importance criterion ranks lowest), is physically pruned, fine-tuned briefly, scored for accuracy
on the calibration set, and (all children of a level together, interleaved, with the unpruned model
re-measured beside them) timed on the target: encoder latency, and decoder latency on the child's own
emissions with its decoder settings. The ``width`` children with the least accuracy lost per unit of
latency saved are kept for the next level. Because the decoder is inside the measured latency, a move
that speeds up the encoder but makes the outputs flatter (and the search slower) is seen for what it is.

Every budget records the most accurate candidate that meets it; the search stops once the tightest is met
(or at ``max_depth``). The best candidate of each budget then gets the final fine-tune and is measured
again, in a separate interleaved run with the unpruned model and a second copy of it (the noise floor).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from asr.checkpoint import LoadedModel, load_model, save_model
from asr.inference import DecoderRound, EvaluationAudio, ctc_loss, encode_batched, stack_emissions
from asr.metrics import error_counts
from asr.models.lstm_ctc import LSTMCTCEncoder
from asr.recognizer import SpeechRecognizer
from common.errors import SpeechpruneError
from common.measure import interleaved
from decoding.backends import DecoderSettings, make_decoder
from pruning.cost import encoder_macs_per_second
from pruning.criteria import Criterion, PruningContext, make_criterion
from pruning.selection import keep_top_units, remove_lowest_units, units_to_keep
from pruning.structure import prune_encoder, unit_groups
from speechprune.search.config import Budget, DecoderChoice, SearchConfig
from speechprune.search.finetune import candidate_seed
from speechprune.search.state import CandidateRecord, SearchState
from speechprune.search.targets import LatencyTarget, Measured, TimingJob

ROOT = "root"
UNIFORM_PREFIX = "uniform-s"  # ids of the uniform-pruning baseline's candidates
CO_TUNE_THRESHOLDS = (10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0)
CO_TUNE_CUTOFFS = (0.999, 0.99, 0.95)
REFERENCE = "unpruned"


@dataclass
class BudgetResult:
    budget: Budget
    candidate: str | None  # best candidate meeting the budget during the search (None: not reached)
    closest: str | None  # when not reached: the candidate whose objective came closest


class LatencySearch:
    """One search: ``LatencySearch(...).run()`` -> per-budget results, the tree in ``exp_dir``."""

    def __init__(
        self,
        base_model: Path,
        exp_dir: Path,
        search: SearchConfig,
        decoder: DecoderChoice,
        target: LatencyTarget,
        fine_tuner: Callable[[Path, Path, int, int], None],
        state: SearchState,
        calibration: EvaluationAudio,
    ) -> None:
        if search.criterion == "vib":
            raise SpeechpruneError("search.criterion vib needs trained gates; use mnp, energy or random")
        self.base_model = Path(base_model)
        self.exp_dir = Path(exp_dir)
        self.search = search
        self.decoder = decoder
        self.target = target
        self.fine_tune = fine_tuner
        self.state = state
        self.budgets = search.parsed_budgets()
        self.criterion: Criterion = make_criterion(search.criterion, seed=search.seed)
        base = load_model(self.base_model)
        self.original = unit_groups(base.recognizer.encoder)
        self.groups = [g for g in self.original if any(g.startswith(p + ".") for p in search.groups)]
        unknown = [p for p in search.groups if not any(g.startswith(p + ".") for g in self.original)]
        if unknown or not self.groups:
            raise SpeechpruneError(
                f"search.groups {unknown or search.groups}: the encoder has no such layers"
            )
        self.calibration = calibration

    # ------------------------------------------------------------------ the loop
    def run(self, progress: bool = True) -> list[BudgetResult]:
        if ROOT not in self.state.candidates:
            self._add_candidate(ROOT, None, 0, None, load_model(self.base_model), self.base_model)
        if self.state.candidates[ROOT].status != "measured":
            self._measure([ROOT])
        beam = self.state.levels[-1] if self.state.levels else [ROOT]
        bar = tqdm(
            total=self.search.max_depth, initial=len(self.state.levels), desc="search", disable=not progress
        )
        while not self.state.finished:
            level = len(self.state.levels) + 1
            if level > self.search.max_depth:
                self._finish(f"reached max_depth {self.search.max_depth}")
                break
            children = self._spawn(beam, level)
            if not children:
                self._finish("no move left: every group is at search.min_units")
                break
            pending = [c for c in children if self.state.candidates[c].status != "measured"]
            if pending:
                self._measure(pending)
            beam = self._select(children)
            self.state.levels.append(beam)
            self.state.save(self.exp_dir)
            bar.update(1)
            bar.set_postfix(best=self._describe(beam[0]))
            tightest = self.budgets[-1]
            if any(self._meets(self.state.candidates[c], tightest) for c in children):
                self._finish(f"the tightest budget ({tightest.label}) is met")
        bar.close()
        return self.budget_results()

    def _finish(self, reason: str) -> None:
        self.state.finished = True
        self.state.stop_reason = reason
        self.state.save(self.exp_dir)

    # ------------------------------------------------------------------ candidates
    def _spawn(self, beam: list[str], level: int) -> list[str]:
        """Children of every kept candidate, one per group that can still shrink; identical width
        vectors reached along different paths are evaluated once (the first one spawned)."""
        children: list[str] = []
        seen = {
            tuple(sorted(r.widths.items())) for r in self.state.candidates.values() if not is_uniform(r.id)
        }
        for parent_id in beam:
            parent = self.state.candidates[parent_id]
            loaded: LoadedModel | None = None
            for group in self.groups:
                child_id = f"{parent_id}/{group}" if parent_id != ROOT else group
                if child_id in self.state.candidates:
                    children.append(child_id)
                    continue
                step_units = self.original[group][1] - units_to_keep(
                    self.original[group][1], self.search.step
                )
                widths = {**parent.widths, group: parent.widths[group] - max(1, step_units)}
                if widths[group] < self.search.min_units or tuple(sorted(widths.items())) in seen:
                    continue
                loaded = loaded or load_model(self._path(parent))
                encoder = loaded.recognizer.encoder
                scores = self.criterion.scores(encoder, self._context(loaded, level))
                plan = remove_lowest_units(
                    encoder, scores, group, parent.widths[group] - widths[group], self.search.min_units
                )
                if plan is None:
                    continue
                child = LoadedModel(
                    replace_encoder(loaded, prune_encoder(encoder, plan)), loaded.tokenizer, {}
                )
                model_path = self.exp_dir / "candidates" / f"{child_id.replace('/', '__')}.pt"
                save_model(model_path, child.recognizer, child.tokenizer)
                self.fine_tune(
                    model_path,
                    model_path,
                    self.search.finetune_batches,
                    candidate_seed(self.search.seed, child_id),
                )
                self._add_candidate(child_id, parent_id, level, group, load_model(model_path), model_path)
                seen.add(tuple(sorted(widths.items())))
                children.append(child_id)
        return children

    def add_uniform_baseline(self) -> list[str]:
        """Uniformly pruned models at ``search.uniform_sparsities`` (LSTM units, the same fraction of every
        layer, ranked by the criterion on the unpruned model), fine-tuned as briefly as the search's
        candidates and measured the same way: what the search is compared with at each budget."""
        root = self.state.candidates[ROOT]
        lstm_groups = [g for g in self.original if g.startswith("lstm.")]
        ids = []
        for sparsity in self.search.uniform_sparsities:
            cid = f"{UNIFORM_PREFIX}{round(sparsity * 100):02d}"
            ids.append(cid)
            if cid in self.state.candidates:
                continue
            loaded = load_model(self._path(root))
            encoder = loaded.recognizer.encoder
            scores = self.criterion.scores(encoder, self._context(loaded, 0))
            plan = keep_top_units(encoder, scores, self.original, sparsity, lstm_groups)
            model_path = self.exp_dir / "candidates" / f"{cid}.pt"
            save_model(model_path, replace_encoder(loaded, prune_encoder(encoder, plan)), loaded.tokenizer)
            self.fine_tune(
                model_path, model_path, self.search.finetune_batches, candidate_seed(self.search.seed, cid)
            )
            self._add_candidate(cid, ROOT, 0, f"uniform {sparsity:g}", load_model(model_path), model_path)
        pending = [c for c in ids if self.state.candidates[c].status != "measured"]
        if pending:
            self._measure(pending)
        return ids

    def _context(self, loaded: LoadedModel, level: int) -> PruningContext:
        context = PruningContext(event=level)
        if self.criterion.needs_data:
            waveforms = self.calibration.waveforms[:16]
            lengths = torch.tensor([w.shape[0] for w in waveforms])
            with torch.no_grad():
                features, frames = loaded.recognizer.features(
                    torch.nn.utils.rnn.pad_sequence(waveforms, True), lengths
                )
            context.features, context.lengths = features, frames
        return context

    def _add_candidate(
        self, cid: str, parent: str | None, level: int, move: str | None, model: LoadedModel, path: Path
    ) -> None:
        """Score a fine-tuned candidate for accuracy (and co-tune its decoder) and record it."""
        emissions = encode_batched(model.recognizer, self.calibration.waveforms)
        greedy = make_decoder("greedy", model.tokenizer)(*stack_emissions(emissions))
        settings = self.decoder.settings
        if self.search.co_tune and cid != ROOT:
            settings = self._co_tune(model, emissions)
        record = CandidateRecord(
            id=cid,
            parent=parent,
            level=level,
            move=move,
            widths={g: units for g, (_, units) in unit_groups(model.recognizer.encoder).items()},
            model=str(path) if cid == ROOT else str(path.relative_to(self.exp_dir)),
            macs_per_second=encoder_macs_per_second(
                model.recognizer.encoder, model.recognizer.features.config
            ),
            ctc_loss=round(ctc_loss(emissions, self.calibration.references, model.tokenizer), 5),
            wer_greedy=round(error_counts(self.calibration.references, [r.text for r in greedy]).wer, 5),
            decoder={"backend": self.decoder.backend, **settings_to_dict(settings)},
        )
        self.state.candidates[cid] = record
        self.state.save(self.exp_dir)

    def _co_tune(self, model: LoadedModel, emissions: list[torch.Tensor]) -> DecoderSettings:
        """The cheapest tightening of the user's decoder settings (beam threshold, and cutoff_prob for the
        own decoder) whose calibration WER stays within ``wer_tolerance`` of the user's settings' WER on
        this candidate, chosen by time measured here on the candidate's emissions (no new encoder pass)."""
        base = self.decoder.settings
        grid = [base]
        current = base.beam_threshold if base.beam_threshold is not None else float("inf")
        grid += [replace(base, beam_threshold=t) for t in CO_TUNE_THRESHOLDS if t < current]
        if self.decoder.backend == "own":
            grid += [
                replace(s, cutoff_prob=c) for s in list(grid) for c in CO_TUNE_CUTOFFS if c < s.cutoff_prob
            ]
        rounds = {
            i: DecoderRound(make_decoder(self.decoder.backend, model.tokenizer, s), emissions)
            for i, s in enumerate(grid)
        }
        timings = interleaved(rounds, repeats=1, warmup=1)  # the warm-up pass gives every grid point's texts
        references = self.calibration.references
        wers = {i: error_counts(references, [r.text for r in run.results]).wer for i, run in rounds.items()}
        allowed = [i for i in range(len(grid)) if wers[i] <= wers[0] + self.search.wer_tolerance + 1e-12]
        return grid[min(allowed, key=lambda i: timings[i].mean_ms)]

    # ------------------------------------------------------------------ measurement
    def _measure(self, ids: list[str]) -> None:
        """Time ``ids`` on the target, interleaved with the unpruned model; record latencies and ratios."""
        jobs = {REFERENCE: self._job(self.state.candidates[ROOT])}
        jobs.update({cid: self._job(self.state.candidates[cid]) for cid in ids if cid != ROOT})
        measured = self.target.measure(jobs)
        reference = measured[REFERENCE]
        root = self.state.candidates[ROOT]
        for cid in ids:
            record = self.state.candidates[cid]
            result = reference if cid == ROOT else measured[cid]
            self._record_measurement(record, result, reference, root)
        self.state.save(self.exp_dir)

    def _record_measurement(
        self, record: CandidateRecord, result: Measured, reference: Measured, root: CandidateRecord
    ) -> None:
        latency, base = result.latency, reference.latency
        record.latency = latency.to_dict() | {"ms_per_second": round(latency.ms_per_second, 5)}
        record.reference_latency = base.to_dict() | {"ms_per_second": round(base.ms_per_second, 5)}
        record.wer = round(error_counts(self.calibration.references, [r.text for r in result.results]).wer, 5)
        record.ratios = {
            "end_to_end": round(latency.end_to_end_ms / base.end_to_end_ms, 5),
            "encoder": round(latency.encoder_ms / base.encoder_ms, 5),
            "macs": round(record.macs_per_second / root.macs_per_second, 5),
            "decoder": round(latency.decoder_ms / base.decoder_ms, 5) if base.decoder_ms > 0 else 1.0,
        }
        record.status = "measured"

    def _job(self, record: CandidateRecord) -> TimingJob:
        settings = settings_from_dict(record.decoder)
        return TimingJob(self._path(record), record.decoder["backend"], settings)

    def _path(self, record: CandidateRecord) -> Path:
        return Path(record.model) if record.id == ROOT else self.exp_dir / record.model

    # ------------------------------------------------------------------ decisions
    def _accuracy(self, record: CandidateRecord) -> float:
        return record.ctc_loss if self.search.accuracy == "ctc_loss" else float(record.wer)

    def _select(self, children: list[str]) -> list[str]:
        """The ``width`` best children by :func:`trade_off` against their parent."""
        objective = self.search.objective

        def score(cid: str) -> tuple[int, float, float]:
            child = self.state.candidates[cid]
            parent = self.state.candidates[child.parent]
            saved = parent.objective_value(objective) - child.objective_value(objective)
            lost = self._accuracy(child) - self._accuracy(parent)
            return (*trade_off(lost, saved), child.objective_value(objective))

        return sorted(children, key=score)[: self.search.width]

    def _value(self, record: CandidateRecord, budget: Budget) -> float:
        """The objective's value in the budget's unit."""
        if budget.unit == "fraction":
            return record.objective_value(self.search.objective)
        latency = record.latency or {}
        if self.search.objective == "encoder":
            return latency["encoder_ms"] / latency["audio_seconds_mean"]
        return latency["ms_per_second"]

    def _meets(self, record: CandidateRecord, budget: Budget) -> bool:
        return record.status == "measured" and self._value(record, budget) <= budget.value

    def budget_results(self, uniform: bool = False) -> list[BudgetResult]:
        """Per budget, the most accurate fitting candidate of the search (or of the uniform baseline)."""
        measured = [
            r
            for r in self.state.candidates.values()
            if r.status == "measured" and r.id != ROOT and is_uniform(r.id) == uniform
        ]
        results = []
        for budget in self.budgets:
            fitting = [r for r in measured if self._meets(r, budget)]
            best = min(fitting, key=lambda r: (float(r.wer), r.ctc_loss)) if fitting else None
            closest = None if best or not measured else min(measured, key=lambda r: self._value(r, budget))
            results.append(BudgetResult(budget, best.id if best else None, closest.id if closest else None))
        return results

    def _describe(self, cid: str) -> str:
        record = self.state.candidates[cid]
        return f"{cid} e2e {record.ratios.get('end_to_end', 0):.2f} WER {record.wer}"


def trade_off(lost: float, saved: float) -> tuple[int, float]:
    """Sort key of a move that changed accuracy by ``lost`` (higher = worse) and saved ``saved`` of the
    objective: moves that save nothing come last; moves that lost no accuracy (the brief fine-tune can
    even improve an under-trained parent) come first, the largest saving first; the rest by accuracy lost
    per unit saved. A plain ratio would rank a free move by how *little* it saves."""
    if saved <= 1e-9:
        return (2, -saved)
    if lost <= 0:
        return (0, -saved)
    return (1, lost / saved)


def is_uniform(candidate_id: str) -> bool:
    return candidate_id.startswith(UNIFORM_PREFIX)


def replace_encoder(loaded: LoadedModel, encoder: LSTMCTCEncoder) -> SpeechRecognizer:
    """A copy of ``loaded``'s recognizer (its front end) with ``encoder`` in place of its own."""
    recognizer = copy.deepcopy(loaded.recognizer)
    recognizer.encoder = encoder
    return recognizer.eval()


def settings_to_dict(settings: DecoderSettings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}


def settings_from_dict(values: dict[str, Any]) -> DecoderSettings:
    return DecoderSettings(**{k: v for k, v in values.items() if k != "backend"})
