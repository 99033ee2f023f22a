"""Archtree-style latency-budgeted tree search over layer widths, with latency measured on the target.

From each kept candidate, one child per unit group removes ``step`` of that group's original units (the
ones the importance criterion ranks lowest; a group's last move takes what is left above ``min_units``),
is physically pruned, fine-tuned briefly (a level's children at once on a Ray cluster), scored for accuracy
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
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from asr.checkpoint import LoadedModel, load_model, save_model
from asr.inference import EvaluationAudio, ctc_loss, encode_batched, stack_emissions
from asr.metrics import error_counts
from asr.models.lstm_ctc import LSTMCTCEncoder
from asr.recognizer import SpeechRecognizer
from common.errors import SpeechpruneError
from decoding.backends import DecoderSettings, make_decoder
from pruning.cost import encoder_macs_per_second
from pruning.criteria import Criterion, PruningContext, make_criterion
from pruning.selection import keep_top_units, remove_lowest_units, units_to_keep
from pruning.structure import prune_encoder, unit_groups
from speechprune.search.config import Budget, DecoderChoice, SearchConfig
from speechprune.search.finetune import candidate_seed
from speechprune.search.scale_out import FineTuneJob, FineTunes
from speechprune.search.state import CandidateRecord, SearchState
from speechprune.search.targets import (
    LatencyTarget,
    Measured,
    TimingJob,
    settings_from_dict,
    settings_to_dict,
)
from speechprune.study.tuning import cheapest_within, decode_grid

ROOT = "root"
UNIFORM_PREFIX = "uniform-s"  # ids of the uniform-pruning baseline's candidates
CO_TUNE_THRESHOLDS = (10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0)
CO_TUNE_CUTOFFS = (0.999, 0.99, 0.95)
CO_TUNE_TEMPERATURES = (0.8, 0.6)  # post-hoc sharpening, the free lever against a flatter pruned model
REFERENCE = "unpruned"
LANDING_MARGIN = 0.015  # aim this far under a budget: about the check run's noise on this machine
LANDING_BAND = 0.03  # a candidate this close under a budget has landed on it
LANDING_TRIES = 2
LANDING_ID = re.compile(r"-\d+u$")


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
        fine_tunes: FineTunes,
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
        self.fine_tunes = fine_tunes
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
        self._reopen()
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
            self._land(children)
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

    def _reopen(self) -> None:
        """Continue a finished search whose config now asks for more (a deeper ``max_depth``, a tighter
        budget), after landing on budgets that earlier levels crossed but that were not asked for then."""
        for level in range(1, len(self.state.levels) + 1):
            self._land(
                [
                    r.id
                    for r in self.state.candidates.values()
                    if r.level == level
                    and r.status == "measured"
                    and not (is_uniform(r.id) or is_landing(r.id))
                ]
            )
        tree = [r for r in self.state.candidates.values() if not is_uniform(r.id)]
        tightest_met = any(self._meets(r, self.budgets[-1]) for r in tree)
        if (
            self.state.finished
            and not self.state.stop_reason.startswith("no move left")
            and len(self.state.levels) < self.search.max_depth
            and not tightest_met
        ):
            self.state.finished = False
            self.state.stop_reason = ""

    def _finish(self, reason: str) -> None:
        self.state.finished = True
        self.state.stop_reason = reason
        self.state.save(self.exp_dir)

    # ------------------------------------------------------------------ candidates
    def _spawn(self, beam: list[str], level: int) -> list[str]:
        """Children of every kept candidate, one per group that can still shrink; identical width
        vectors reached along different paths are evaluated once (the first one spawned). The new
        children are pruned first, then fine-tuned together (at once on a Ray cluster), each recorded as
        its fine-tune finishes."""
        children: list[str] = []
        planned: dict[Path, tuple[FineTuneJob, str, str, str]] = {}
        seen = self._seen_widths()
        for parent_id in beam:
            parent = self.state.candidates[parent_id]
            for group in self.groups:
                child_id = f"{parent_id}/{group}" if parent_id != ROOT else group
                if child_id in self.state.candidates:
                    children.append(child_id)
                    continue
                step_units = self.original[group][1] - units_to_keep(
                    self.original[group][1], self.search.step
                )
                # the last move of a group takes what is left above min_units, so that a step that does
                # not divide the layer does not strand it (192 units, 20% steps: 40 -> 8, not stuck at 40)
                removed = min(max(1, step_units), parent.widths[group] - self.search.min_units)
                widths = {**parent.widths, group: parent.widths[group] - removed}
                if removed < 1 or tuple(sorted(widths.items())) in seen:
                    continue
                job = self._prune_child(parent, group, removed, child_id)
                if job is not None:
                    seen.add(tuple(sorted(widths.items())))
                    children.append(child_id)
                    planned[job.model_out] = (job, parent.id, group, child_id)
        for job in self.fine_tunes.run([job for job, *_ in planned.values()]):
            _, parent_id, group, child_id = planned[job.model_out]
            self._add_candidate(child_id, parent_id, level, group, load_model(job.model_out), job.model_out)
        for _, _, _, child_id in planned.values():  # in spawn order, whichever fine-tune finished first
            self.state.candidates[child_id] = self.state.candidates.pop(child_id)
        return children

    def _seen_widths(self, landing: bool = False) -> set[tuple[tuple[str, int], ...]]:
        """Width vectors of the tree's candidates (and of its landing candidates, with ``landing``)."""
        return {
            tuple(sorted(r.widths.items()))
            for r in self.state.candidates.values()
            if not is_uniform(r.id) and (landing or not is_landing(r.id))
        }

    def _prune_child(
        self, parent: CandidateRecord, group: str, removed: int, child_id: str
    ) -> FineTuneJob | None:
        """Prune ``removed`` units of ``group`` from ``parent`` (the criterion's lowest) into the child's
        model file; its fine-tune job, or None when the criterion's plan cannot remove them."""
        loaded = load_model(self._path(parent))
        encoder = loaded.recognizer.encoder
        scores = self.criterion.scores(encoder, self._context(loaded, parent.level + 1))
        plan = remove_lowest_units(encoder, scores, group, removed, self.search.min_units)
        if plan is None:
            return None
        child = LoadedModel(replace_encoder(loaded, prune_encoder(encoder, plan)), loaded.tokenizer, {})
        model_path = self.exp_dir / "candidates" / f"{child_id.replace('/', '__')}.pt"
        save_model(model_path, child.recognizer, child.tokenizer)
        seed = candidate_seed(self.search.seed, child_id)
        return FineTuneJob(model_path, model_path, self.search.finetune_batches, seed)

    def _make_child(
        self, parent: CandidateRecord, group: str, removed: int, child_id: str, level: int
    ) -> bool:
        """One child made and recorded at once (a landing retry); False when it cannot be made."""
        job = self._prune_child(parent, group, removed, child_id)
        if job is None:
            return False
        self.fine_tunes.one(job)
        self._add_candidate(child_id, parent.id, level, group, load_model(job.model_out), job.model_out)
        return True

    # ------------------------------------------------------------------ landing on a budget
    def _land(self, children: list[str]) -> None:
        """Land just under every budget this level crossed for the first time.

        A move removes ``step`` of a group, so the first candidate under a budget may lie well below it,
        and a model that is faster than asked for is less accurate than it needs to be. So when a move
        crosses a budget, the same move is retried from the same parent with fewer units removed, the
        count interpolated (secant) between the parent and the child to land ``LANDING_MARGIN`` under the
        budget, at most ``LANDING_TRIES`` times, until a candidate fits within ``LANDING_BAND`` of it.
        Landing candidates are recorded (and can be a budget's best) but the tree does not grow from them.
        """
        for budget in self.budgets:
            if self._landed(budget, uniform=False):
                continue
            crossing = [
                self.state.candidates[c]
                for c in children
                if self._meets(self.state.candidates[c], budget)
                and not self._meets(self.state.candidates[self.state.candidates[c].parent], budget)
            ]
            if not crossing:
                continue
            child = min(crossing, key=self._accuracy)
            parent = self.state.candidates[child.parent]
            group = child.move
            removed = parent.widths[group] - child.widths[group]

            def make(
                units: float, parent: CandidateRecord = parent, group: str = group, level: int = child.level
            ) -> str | None:
                count = int(round(units))
                cid = f"{parent.id}/{group}-{count}u" if parent.id != ROOT else f"{group}-{count}u"
                widths = tuple(sorted({**parent.widths, group: parent.widths[group] - count}.items()))
                if cid not in self.state.candidates:
                    if widths in self._seen_widths(landing=True):
                        return None
                    if not self._make_child(parent, group, count, cid, level):
                        return None
                if self.state.candidates[cid].status != "measured":
                    self._measure([cid])
                return cid

            self._secant(budget, make, (0.0, parent), (float(removed), child), integral=True)

    def _landed(self, budget: Budget, uniform: bool) -> bool:
        """The budget's pick (of the search, or of the uniform baseline) lies within the band under it. A
        less accurate candidate in the band does not count: the pick is what the user gets."""
        best = self._best_fitting(budget, uniform)
        return best is not None and self._value(best, budget) >= budget.value * (1 - LANDING_BAND)

    def _best_fitting(self, budget: Budget, uniform: bool) -> CandidateRecord | None:
        """The most accurate measured candidate that meets ``budget`` (calibration WER, then CTC loss)."""
        fitting = [
            r
            for r in self.state.candidates.values()
            if r.id != ROOT and is_uniform(r.id) == uniform and self._meets(r, budget)
        ]
        return min(fitting, key=lambda r: (float(r.wer), r.ctc_loss)) if fitting else None

    def _secant(
        self,
        budget: Budget,
        make: Callable[[float], str | None],
        above: tuple[float, CandidateRecord],
        below: tuple[float, CandidateRecord],
        integral: bool,
    ) -> None:
        """Interpolate a one-parameter family (units removed, or sparsity) between a candidate over the
        budget and one under it, towards ``LANDING_MARGIN`` under it."""
        goal = budget.value * (1 - LANDING_MARGIN)
        for _ in range(LANDING_TRIES):
            (x_hi, hi), (x_lo, lo) = above, below
            v_hi, v_lo = self._value(hi, budget), self._value(lo, budget)
            if v_hi <= v_lo:
                return  # measured noise inverted the pair: nothing to interpolate
            x = x_hi + (x_lo - x_hi) * (v_hi - goal) / (v_hi - v_lo)
            if integral:
                x = float(min(max(round(x), x_hi + 1), x_lo - 1))
                if not x_hi < x < x_lo:
                    return
            cid = make(x)
            if cid is None:
                return
            record = self.state.candidates[cid]
            if not self._meets(record, budget):
                above = (x, record)
            elif self._value(record, budget) >= budget.value * (1 - LANDING_BAND):
                return
            else:
                below = (x, record)

    def add_uniform_baseline(self) -> list[str]:
        """Uniformly pruned models at ``search.uniform_sparsities`` (LSTM units, the same fraction of every
        layer, ranked by the criterion on the unpruned model), fine-tuned as briefly as the search's
        candidates and measured the same way: what the search is compared with at each budget. Between
        the two sparsities around a budget, the sparsity is interpolated to land under it as the search
        does (:meth:`_land`), so that both are compared at about the same latency."""
        ids = [self._uniform(sparsity) for sparsity in self.search.uniform_sparsities]
        pending = [c for c in ids if self.state.candidates[c].status != "measured"]
        if pending:
            self._measure(pending)
        for budget in self.budgets:
            if self._landed(budget, uniform=True):
                continue
            ordered = sorted(zip(self.search.uniform_sparsities, ids, strict=True))
            records = [(s, self.state.candidates[c]) for s, c in ordered]
            above = [(s, r) for s, r in records if not self._meets(r, budget)]
            below = [(s, r) for s, r in records if self._meets(r, budget)]
            if above and below and above[0][0] < below[0][0]:
                lower = max((p for p in above if p[0] < below[0][0]), key=lambda p: p[0])
                self._secant(budget, self._uniform_measured, lower, below[0], integral=False)
        return ids

    def _uniform(self, sparsity: float) -> str:
        """The uniformly pruned, briefly fine-tuned candidate at ``sparsity`` (made once)."""
        cid = f"{UNIFORM_PREFIX}{sparsity * 100:.3g}"
        if cid in self.state.candidates:
            return cid
        root = self.state.candidates[ROOT]
        lstm_groups = [g for g in self.original if g.startswith("lstm.")]
        loaded = load_model(self._path(root))
        encoder = loaded.recognizer.encoder
        scores = self.criterion.scores(encoder, self._context(loaded, 0))
        plan = keep_top_units(encoder, scores, self.original, sparsity, lstm_groups)
        model_path = self.exp_dir / "candidates" / f"{cid}.pt"
        save_model(model_path, replace_encoder(loaded, prune_encoder(encoder, plan)), loaded.tokenizer)
        seed = candidate_seed(self.search.seed, cid)
        self.fine_tunes.one(FineTuneJob(model_path, model_path, self.search.finetune_batches, seed))
        self._add_candidate(cid, ROOT, 0, f"uniform {sparsity:g}", load_model(model_path), model_path)
        return cid

    def _uniform_measured(self, sparsity: float) -> str:
        cid = self._uniform(round(sparsity, 3))
        if self.state.candidates[cid].status != "measured":
            self._measure([cid])
        return cid

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
        """The cheapest tightening of the user's decoder settings (beam threshold, a sharpening temperature,
        and cutoff_prob for the own decoder) whose calibration WER stays within ``wer_tolerance`` of the
        user's settings' WER on this candidate, chosen by time measured here on the candidate's emissions
        (no new encoder pass)."""
        base = self.decoder.settings
        grid = [base]
        current = base.beam_threshold if base.beam_threshold is not None else float("inf")
        grid += [replace(base, beam_threshold=t) for t in CO_TUNE_THRESHOLDS if t < current]
        grid += [replace(s, temperature=s.temperature * t) for s in list(grid) for t in CO_TUNE_TEMPERATURES]
        if self.decoder.backend == "own":  # cutoffs at the user's temperature only: the own decoder is slow
            grid += [
                replace(s, cutoff_prob=c)
                for s in list(grid)
                if s.temperature == base.temperature
                for c in CO_TUNE_CUTOFFS
                if c < s.cutoff_prob
            ]
        points = decode_grid(
            self.decoder.backend, model.tokenizer, grid, emissions, self.calibration.references
        )
        return (cheapest_within(points, points[0].wer + self.search.wer_tolerance) or points[0]).settings

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
        record.wer = round(error_counts(self.calibration.references, result.texts).wer, 5)
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
            best = self._best_fitting(budget, uniform)
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


def is_landing(candidate_id: str) -> bool:
    """A candidate :meth:`LatencySearch._land` made (its last move removed a custom unit count)."""
    return LANDING_ID.search(candidate_id) is not None


def replace_encoder(loaded: LoadedModel, encoder: LSTMCTCEncoder) -> SpeechRecognizer:
    """A copy of ``loaded``'s recognizer (its front end) with ``encoder`` in place of its own."""
    recognizer = copy.deepcopy(loaded.recognizer)
    recognizer.encoder = encoder
    return recognizer.eval()
