"""The search tree on disk: every candidate's record, each level's kept candidates, each budget's best.

The state is rewritten (atomically) after every candidate and every measurement, so a killed search
rerun with the same command continues where it stopped. A rerun with a different config is refused: its
candidates would not be comparable with the recorded ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import SpeechpruneError
from common.fileio import write_json

STATE_NAME = "search_state.json"
STATE_VERSION = 1


@dataclass
class CandidateRecord:
    """One node of the tree.

    ``status`` moves from "finetuned" (pruned, fine-tuned, accuracy and decoder settings known) to
    "measured" (latency on the target known). Ratios are to the unpruned model measured in the same
    interleaved run as this candidate.
    """

    id: str
    parent: str | None
    level: int
    move: str | None  # the unit group this candidate's move shrank (None for the root)
    widths: dict[str, int]
    model: str  # model file, relative to the experiment folder (absolute for the root)
    macs_per_second: float
    ctc_loss: float
    wer_greedy: float
    decoder: dict[str, Any]  # backend + settings this candidate is decoded with
    status: str = "finetuned"
    wer: float | None = None  # with its decoder, on the calibration set (from the target's results)
    latency: dict[str, float] | None = None
    reference_latency: dict[str, float] | None = None
    ratios: dict[str, float] = field(default_factory=dict)

    def objective_value(self, objective: str) -> float:
        """The quantity budgets constrain, as a fraction of the unpruned model's."""
        return self.ratios[objective]


@dataclass
class SearchState:
    fingerprint: str
    candidates: dict[str, CandidateRecord] = field(default_factory=dict)
    levels: list[list[str]] = field(default_factory=list)  # kept candidate ids after each level
    finished: bool = False
    stop_reason: str = ""
    elapsed_seconds: float = 0.0  # wall time spent on this search, over every (resumed) run
    version: int = STATE_VERSION

    def __post_init__(self) -> None:
        self._clock = time.monotonic()

    def save(self, exp_dir: Path) -> None:
        now = time.monotonic()
        self.elapsed_seconds = round(self.elapsed_seconds + now - self._clock, 1)
        self._clock = now
        write_json(exp_dir / STATE_NAME, asdict(self))

    @classmethod
    def load_or_new(cls, exp_dir: Path, fingerprint: str) -> SearchState:
        path = exp_dir / STATE_NAME
        if not path.is_file():
            return cls(fingerprint)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            state = cls(
                fingerprint=payload["fingerprint"],
                candidates={k: CandidateRecord(**v) for k, v in payload["candidates"].items()},
                levels=[list(level) for level in payload["levels"]],
                finished=bool(payload["finished"]),
                stop_reason=str(payload.get("stop_reason", "")),
                elapsed_seconds=float(payload.get("elapsed_seconds", 0.0)),
                version=int(payload["version"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise SpeechpruneError(
                f"{path}: not a search state file ({error}); move it away to start over"
            ) from None
        if state.version != STATE_VERSION:
            raise SpeechpruneError(f"{path}: written by another version of the search; move it away")
        if state.fingerprint != fingerprint:
            raise SpeechpruneError(
                f"{path}: this folder holds a search with a different config or model; use another --exp-dir "
                "(or delete the folder to start over)"
            )
        return state


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable digest of everything that decides the tree (config sections, base model, target)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
