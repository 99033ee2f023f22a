"""Measure voice adaptation on a leave-one-speaker-out run: each fold's model adapted to its held-out speaker.

For every fold of LOSO_DIR (``<speaker>/model.pt``, scored by stage 9) the held-out speaker "enrols" with
``--enrol`` of its pause-joined strings, spread over its manifest (a user's recordings of that many digit
strings), and one of two adaptations writes the adapted model:

- ``--method warp`` (default): ``speechprune adapt-voice``'s frequency-warp fit
  (:func:`asr.voice_warp.adapt_model_file`), which reads the strings' text;
- ``--method self``: ``speechprune self-adapt``'s fine-tuning on the model's own confident transcripts
  (:func:`asr.self_adaptation.self_adapt_model_file`), which never reads the text.

Both models are scored on the speaker's other strings and on its fluent probe. The results are laid out
as two runs that ``local/loso_summary.py --against`` pairs fold by fold:

    LOSO_DIR_enrolN_voice/<speaker>/   warp: model_voice.pt, voice_warp.json, eval/
    LOSO_DIR_enrolN_self/<speaker>/    self: model_self.pt, self_adaptation.json, eval/
    LOSO_DIR_enrolN_plain/<speaker>/   the same fold unadapted, on the same strings: eval/

    python local/loso_voice_enrolment.py exp/loso/recipe --enrol 20
    python local/loso_summary.py exp/loso/recipe_enrol20_voice --against exp/loso/recipe_enrol20_plain
    python local/loso_voice_enrolment.py exp/loso/recipe --enrol 200 --method self
    python local/loso_voice_enrolment.py exp/loso/recipe --enrol 200 --method self \
        --model prune/vib_entropy/snapshots/sparsity50.pt

``--model`` adapts another model of each fold (a pruned snapshot, by its path inside the fold); the run
names then carry its path (``recipe_enrol200_prune_vib_entropy_snapshots_sparsity50_{self,plain}``).

The enrolment strings are left out of the pause-joined score; the probe re-joins the same speaker's
recordings, enrolment ones included, so it shares recordings (not strings) with the enrolment.
``--from-probe`` enrols with fluent strings instead (a user's own recordings are fluent): 200 of the
probe's strings adapt, its other strings and all the pause-joined ones are scored (runs named
``..._enrolNprobe_...``). A rerun
skips the folds already done.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from asr.augment import AugmentConfig
from asr.data.manifest import read_manifest, write_manifest
from asr.evaluate import evaluate_manifest
from asr.inference import spread_subset
from asr.self_adaptation import SelfAdaptationConfig, self_adapt_model_file
from asr.voice_warp import adapt_model_file
from common.errors import SpeechpruneError
from common.fileio import write_json

HELD_OUT = "test_speaker.summary.json"
PROBE = "test_speaker_tight.summary.json"


METHOD_DIRS = {"warp": "voice", "self": "self"}  # --method -> the adapted run's suffix and model name


def _warp(original: Path, enrolment_manifest: Path, model: Path) -> str:
    fit = adapt_model_file(original, enrolment_manifest, model)
    write_json(
        model.parent / "voice_warp.json",
        {
            "factor": fit.factor,
            "relative_gain": fit.relative_gain(),
            "lowest_loss_factor": fit.lowest,
            "lowest_loss_relative_gain": fit.relative_gain(fit.lowest),
            "enrolment_utterances": fit.utterances,
            "losses": {f"{factor:g}": loss for factor, loss in fit.losses.items()},
        },
    )
    lowest = f"lowest loss at {fit.lowest:g}, {100 * fit.relative_gain(fit.lowest):.1f}% under unwarped"
    return f"warp {fit.factor:g} ({lowest})"


def _self(original: Path, enrolment_manifest: Path, model: Path, rounds: int | None) -> str:
    recordings = [u.audio_filepath for u in read_manifest(enrolment_manifest)]  # the text is not read
    config = SelfAdaptationConfig() if rounds is None else SelfAdaptationConfig(rounds=rounds)
    report = self_adapt_model_file(original, recordings, model, AugmentConfig(), config)
    write_json(model.parent / "self_adaptation.json", report.to_dict())
    for path, reason in report.bad_files:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    kept = f"{report.kept} of {report.recordings}"
    return f"fine-tuned on {kept} transcripts (confidence >= {report.min_confidence})"


def _enrol_fold(
    fold: Path,
    original: Path,
    adapted_dir: Path,
    plain_dir: Path,
    enrol: int,
    method: str,
    from_probe: bool,
    rounds: int | None,
) -> str:
    """Adapt one fold's model and score it (and the unadapted model, once); returns a line for the log."""
    held_out = json.loads((fold / "eval" / HELD_OUT).read_text())["manifest"]
    probe = json.loads((fold / "eval" / PROBE).read_text())["manifest"]
    if from_probe:  # enrol with fluent strings: the probe's rest is scored, and all pause-joined strings
        held_out, probe = probe, held_out
    utterances = read_manifest(held_out)
    if len(utterances) <= enrol:
        raise SpeechpruneError(f"{held_out}: {len(utterances)} strings, not more than --enrol {enrol}")
    enrolment = spread_subset(utterances, enrol)
    chosen = {u.audio_filepath for u in enrolment}
    adapted_dir.mkdir(parents=True, exist_ok=True)
    plain_dir.mkdir(parents=True, exist_ok=True)
    enrolment_manifest = adapted_dir / "enrolment.jsonl"
    # named as stage 9's manifests, whose summaries loso_summary reads
    rest_manifest = adapted_dir / ("test_speaker_tight.jsonl" if from_probe else "test_speaker.jsonl")
    write_manifest(enrolment_manifest, enrolment)
    write_manifest(rest_manifest, [u for u in utterances if u.audio_filepath not in chosen])
    adapted = adapted_dir / f"model_{METHOD_DIRS[method]}.pt"
    if method == "warp":
        line = _warp(original, enrolment_manifest, adapted)
    else:
        line = _self(original, enrolment_manifest, adapted, rounds)
    runs = [(adapted, adapted_dir)]
    if not (plain_dir / "train_summary.json").is_file():  # the other method scored it on these strings
        runs.insert(0, (original, plain_dir))
    # the adapted run's train_summary.json marks the fold done: it is written last, after the plain one
    for model, out in runs:
        for manifest in (rest_manifest, probe):  # summaries named after the manifests, as stage 9's
            evaluate_manifest(model, manifest, out / "eval", progress=False)
        shutil.copy(fold / "train_summary.json", out / "train_summary.json")  # what loso_summary reads
    return f"{fold.name}: {line}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loso_dir", type=Path, help="a leave-one-speaker-out run (exp/loso/NAME)")
    parser.add_argument("--enrol", type=int, default=20, help="enrolment strings per speaker (default: 20)")
    parser.add_argument(
        "--method",
        choices=sorted(METHOD_DIRS),
        default="warp",
        help="warp: frequency warp fitted on the strings' text; self: fine-tuning on the model's own "
        "transcripts (default: warp)",
    )
    parser.add_argument(
        "--model",
        default="model.pt",
        help="the model of each fold to adapt, by its path inside the fold (default: model.pt)",
    )
    parser.add_argument(
        "--from-probe",
        action="store_true",
        help="enrol with the speaker's fluent probe strings (scored: the probe's others and every "
        "pause-joined string) instead of its pause-joined ones",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="--method self: transcribe-and-fine-tune rounds (default: self-adapt's; runs named _roundsN)",
    )
    args = parser.parse_args()
    if args.rounds is not None and (args.method != "self" or args.rounds < 1):
        print("loso_voice_enrolment.py: --rounds takes a positive count, with --method self", file=sys.stderr)
        return 2
    if Path(args.model).is_absolute() or ".." in Path(args.model).parts:
        print(f"loso_voice_enrolment.py: --model {args.model}: a path inside each fold", file=sys.stderr)
        return 2
    if args.enrol < 1:
        print(f"loso_voice_enrolment.py: --enrol {args.enrol}: needs at least one string", file=sys.stderr)
        return 2
    scored = (path.parents[1] for path in args.loso_dir.glob(f"*/eval/{PROBE}"))
    folds = sorted(fold for fold in scored if (fold / args.model).is_file())
    if not folds:
        problem = f"{args.loso_dir} holds no scored fold with a {args.model}"
        print(f"loso_voice_enrolment.py: {problem}", file=sys.stderr)
        return 2
    model_tag = "" if args.model == "model.pt" else "_" + "_".join(Path(args.model).with_suffix("").parts)
    source = "probe" if args.from_probe else ""
    base = args.loso_dir.parent / f"{args.loso_dir.name}_enrol{args.enrol}{source}{model_tag}"
    adapted_run = f"{base}_{METHOD_DIRS[args.method]}" + (f"_rounds{args.rounds}" if args.rounds else "")
    failed = 0
    for fold in folds:
        adapted_dir = Path(adapted_run) / fold.name
        plain_dir = Path(f"{base}_plain") / fold.name
        if (adapted_dir / "train_summary.json").is_file():
            print(f"{fold.name}: done before, skipped")
            continue
        try:
            print(
                _enrol_fold(
                    fold,
                    fold / args.model,
                    adapted_dir,
                    plain_dir,
                    args.enrol,
                    args.method,
                    args.from_probe,
                    args.rounds,
                ),
                flush=True,
            )
        except SpeechpruneError as error:
            print(f"loso_voice_enrolment.py: {fold.name}: {error}", file=sys.stderr)
            failed += 1
    print(f"compare: python local/loso_summary.py {adapted_run} --against {base}_plain")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
