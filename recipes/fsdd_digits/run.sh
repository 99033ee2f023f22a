#!/usr/bin/env bash
# FSDD connected digits: data -> tokenizer -> train -> evaluate -> LM + decoder tuning -> prune -> study
# -> latency search -> the search's study (every objective, two decoder settings) [-> leave-one-speaker-out]
# [-> a model trained on every speaker, to deploy to new voices].
#
#   bash run.sh                          # everything, from stage 0
#   bash run.sh --stage 2 --stop-stage 2 # only training (resumes from the last checkpoint)
#   bash run.sh --quick                  # minutes-long smoke run on a tiny corpus
#   bash run.sh --fsdd-dir /path/to/fsdd # FSDD elsewhere (default: ../shared/data/fsdd, else download)
#   bash run.sh --units char             # character units instead of whole-word unigram pieces
#   bash run.sh --stage 5 --prune-runs "mnp_vanilla mnp_entropy"   # only these pruning runs
#   bash run.sh --stage 5 --stop-stage 6 --prune-runs "mnp_vanilla mnp_entropy@3" --prune-seeds "1 2"  # lambda 3, 2 seeds
#   bash run.sh --stage 7 --search-set search.objective=encoder       # the latency search, another objective
#   bash run.sh --stage 8 --stop-stage 8   # the search study (hours on 2 cores; resumes run by run)
#   bash run.sh --stage 9 --stop-stage 9   # leave-one-speaker-out: six trainings, each without one speaker
#   bash run.sh --stage 9 --stop-stage 9 --loso-name aug --loso-epochs 4 --set augment.reverb_prob=0.5
#   bash run.sh --stage 9 --stop-stage 9 --loso-speakers "george jackson lucas"   # some folds (one process each)
#   bash run.sh --stage 9 --stop-stage 9 --loso-name tight --loso-against control   # paired against another run
#   bash run.sh --stage 9 --stop-stage 9 --loso-name tempo --join-tempo 1.3   # faster words inside tight strings
#   bash run.sh --stage 9 --stop-stage 9 --loso-name no_theo --loso-exclude theo   # one training speaker fewer
#   bash run.sh --stage 9 --stop-stage 9 --loso-prune "mnp_vanilla vib_entropy"   # what pruning costs a new voice
#   bash run.sh --stage 10 --stop-stage 10  # the model to deploy: trained on all six speakers, then pruned
#   bash run.sh --flite-count 1000       # + 1,000 strings in Flite voices (apt-get install flite), likewise --mbrola-count
#
# Stages are restartable: each one skips or resumes work that is already done.
set -euo pipefail
cd "$(dirname "$0")"
. ../common/prune_runs.sh

stage=0
stop_stage=8            # stages 9 (leave-one-speaker-out, six trainings) and 10 (every speaker) run only when asked for
quick=false
fsdd_dir=""
threads=1               # inference threads for evaluation timings (a one-core edge device)
# Output units: a unigram SentencePiece model of 28 pieces holds every digit word as one unit ("▁seven") plus
# the 16 letters it needs for coverage, so greedy CTC can only emit real words. Characters (--units char)
# spelled 74% of their word errors as non-words ("fivee") in our measurements.
units=unigram
vocab_size=28
extra=()                # extra --set overrides for training
# Pruning study: criterion (MNP, VIBNet) x regularizer (vanilla: lambda = 0; entropy: lambda > 0).
prune_runs="mnp_vanilla mnp_entropy vib_vanilla vib_entropy"
# lambda of the *_entropy runs: the largest of 0.3/1/3/10 that kept test WER within +0.3 of vanilla for MNP
# and VIBNet (two seeds each) while bringing the 50% models' decoder under the unpruned one's (README)
entropy_weight=3.0
prune_seeds=""          # "1 2": every pruning run once per seed (folders RUN_seedN); the study gives mean and spread
prune_extra=()          # extra --set overrides for every pruning run
search_extra=()         # extra --set overrides for the latency search (stage 7)
search_name=end_to_end  # folder of the search under exp/search/
study_extra=()          # extra --study-set overrides of conf/search_study.yaml (stage 8)
loso_name=recipe        # folder of a leave-one-speaker-out run under exp/loso/ (stage 9)
loso_epochs=""          # epochs of each of its trainings (default: the recipe's)
tight_fraction=0.5      # training strings joined like fluent speech (prepare-fsdd --tight-fraction): at the
                        # recipe's budget, all 6 folds, leave-one-speaker-out mean 16.58% -> 15.08% WER
                        # (fluent probe 24.74% -> 19.42%), 5 of 6 better, george worse. 0.8, four folds,
                        # seed 3: +0.31 (probe -0.97), george +3.28, jackson -1.66 (docs/new_voices.md)
join_tempo=1.0          # tight strings: words but the last played up to this many times as fast (prepare-fsdd
                        # --join-tempo; 1.0: off). 1.3 over six folds (8 epochs): leave-one-speaker-out mean
                        # 14.88% -> 15.17%, fluent probe 20.62% -> 21.18%, worse on both seed-2 folds (docs/new_voices.md)
mbrola_count=0          # MBROLA diphone-voice training strings (--mbrola-count 1000: made when MBROLA voices are
                        # installed; 0: neither made nor trained on, even when data/mbrola exists). Off: at the
                        # recipe's budget, on top of tight joins, held-out speaker 6.01% -> 8.63% (docs/new_voices.md)
espeak=true             # train on the 2,000 eSpeak NG strings of data/corpus/train_tts.jsonl (--no-espeak: real
                        # strings alone; the file is still built, the tokenizer still reads it)
more_espeak=0           # eSpeak NG strings beside the corpus's 2,000 (--more-espeak 2000: data/espeak, other draws).
                        # Off: at the recipe's budget held-out george -1.95, nicolas +1.45 points (fluent probe
                        # -1.19 / +2.94; docs/new_voices.md)
flite_count=0           # Flite training strings (--flite-count 1000: made when the flite program is installed,
                        # Debian main; 0: neither made nor trained on, even when data/flite exists). Off: at the
                        # recipe's budget held-out george -2.82, nicolas +10.62 points (docs/new_voices.md)
loso_speakers=""        # stage 9: only these folds ("george nicolas"): split the six across processes or machines
loso_against=""         # stage 9: NAME of another run under exp/loso/ (its control) to compare with, fold by fold
loso_exclude=""         # stage 9: speakers left out of every fold's corpus ("theo"): what one more training
                        # speaker is worth to a new voice, at the same number of training strings
loso_prune=""           # stage 9: pruning runs of every fold's model ("mnp_vanilla vib_entropy", named as in
                        # --prune-runs), snapshots scored on the held-out speaker and on the training speakers

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage="$2"; shift 2 ;;
    --stop-stage) stop_stage="$2"; shift 2 ;;
    --quick) quick=true; shift ;;
    --fsdd-dir) fsdd_dir="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --units) units="$2"; shift 2 ;;
    --vocab-size) vocab_size="$2"; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    --prune-runs) prune_runs="$2"; shift 2 ;;
    --entropy-weight) entropy_weight="$2"; shift 2 ;;
    --prune-seeds) prune_seeds="$2"; shift 2 ;;
    --prune-set) prune_extra+=(--set "$2"); shift 2 ;;
    --search-set) search_extra+=(--set "$2"); shift 2 ;;
    --search-name) search_name="$2"; shift 2 ;;
    --study-set) study_extra+=(--study-set "$2"); shift 2 ;;
    --loso-name) loso_name="$2"; shift 2 ;;
    --loso-epochs) loso_epochs="$2"; shift 2 ;;
    --tight-fraction) tight_fraction="$2"; shift 2 ;;
    --mbrola-count) mbrola_count="$2"; shift 2 ;;
    --flite-count) flite_count="$2"; shift 2 ;;
    --no-espeak) espeak=false; shift ;;
    --more-espeak) more_espeak="$2"; shift 2 ;;
    --join-tempo) join_tempo="$2"; shift 2 ;;
    --loso-speakers) loso_speakers="$2"; shift 2 ;;
    --loso-against) loso_against="$2"; shift 2 ;;
    --loso-exclude) loso_exclude="$2"; shift 2 ;;
    --loso-prune) loso_prune="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$(basename "$0")"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v speechprune >/dev/null; then
  echo "run.sh: 'speechprune' is not on PATH; activate the virtualenv (see README)" >&2
  exit 2
fi

if $quick; then
  data=data_quick exp=exp_quick/baseline
  corpus_sizes=(--train-count 240 --valid-count 40 --test-count 40 --tts-count 60)
  extra=(--set trainer.max_epochs=2 --set trainer.max_time=null "${extra[@]}")
  prune_extra=(--set prune.schedule.target=0.5 --set prune.schedule.step=0.25 --set prune.schedule.final_epochs=1
    --set "prune.snapshots=[0.5]" "${prune_extra[@]}")
  study_sizes=(--limit 20 --repeats 1)
  search_extra=(--set search.max_depth=2 --set search.finetune_batches=2 --set search.final_finetune_batches=2
    --set search.calibration_limit=8 --set search.min_units=2 --set target.repeats=1 --set search.final_checks=1
    --set "search.budgets=[0.9,0.8]"
    --set "search.uniform_sparsities=[0.5]" --set data.num_workers=0 "${search_extra[@]}")
  study_extra=(--study-set "budgets=[0.9,0.8]" --study-set "runs=[[tuned,end_to_end],[wide,encoder]]"
    --study-set "methods.end_to_end={search.objective: end_to_end, search.uniform_sparsities: [0.5]}"
    "${study_extra[@]}")
  calibration_count=10
else
  data=data exp=exp/baseline
  corpus_sizes=()
  study_sizes=(--limit 300 --repeats 3)
  calibration_count=40
fi
prune_dir=$(dirname "$exp")/prune
study_dir=$(dirname "$exp")/study
search_dir=$(dirname "$exp")/search
fsdd_args=()
[[ -n "$fsdd_dir" ]] && fsdd_args=(--fsdd-dir "$fsdd_dir")

# The training speech of a corpus folder: its real strings, the eSpeak NG strings (unless --no-espeak), the
# MBROLA and Flite ones if made (only with --mbrola-count N > 0 / --flite-count N > 0).
train_manifests() {
  local list="$1/train.jsonl"
  $espeak && list+=",$data/corpus/train_tts.jsonl"
  [[ $more_espeak -gt 0 && -f "$data/espeak/train_espeak.jsonl" ]] && list+=",$data/espeak/train_espeak.jsonl"
  [[ $mbrola_count -gt 0 && -f "$data/mbrola/train_mbrola.jsonl" ]] && list+=",$data/mbrola/train_mbrola.jsonl"
  [[ $flite_count -gt 0 && -f "$data/flite/train_flite.jsonl" ]] && list+=",$data/flite/train_flite.jsonl"
  echo "[$list]"
}

# A misspelt pruning run is named before any stage starts, not hours into one.
loso_prune=$(echo $loso_prune)  # "" when only spaces were given: no pruning, not an empty run list
for run in $(prune_run_names "$prune_runs" "$prune_seeds") $loso_prune; do
  prune_run_options "$run" "$entropy_weight"
done

# One pruning run RUN of MODEL into DIR, fine-tuned on the training speech of CORPUS (stages 5, 9, 10): a
# finished run is skipped, an interrupted one resumes. prune_model STAGE MODEL DIR CORPUS RUN
prune_model() {
  local made
  prune_run_options "$5" "$entropy_weight"
  # a run begun or finished from an earlier MODEL (retrained since) would resume or be kept as this one's
  for made in "$3/prune_summary.json" "$3/checkpoints/last.ckpt"; do
    if [[ -f "$made" && "$2" -nt "$made" ]]; then
      echo "run.sh: stage $1: $3 was pruned from an older $2; remove it to prune the new model" >&2; exit 2
    fi
  done
  if [[ -f "$3/prune_summary.json" ]]; then
    echo "== stage $1: $5 already done ($3)"; return
  fi
  echo "== stage $1: pruning run $5 -> $3"
  speechprune prune "$2" --config conf/prune.yaml --exp-dir "$3" \
    --set data.train_manifests="$(train_manifests "$4")" \
    --set data.valid_manifest="$4/valid.jsonl" "${opts[@]}" "${prune_extra[@]}"
}

# Greedy WER of MODEL on every MANIFEST not yet scored into OUT (OUT/NAME.summary.json) since MODEL was
# written: a rerun scores only what is missing or older than the model. score MODEL OUT MANIFEST...
score() {
  local model="$1" out="$2" manifest unscored=()
  shift 2
  for manifest in "$@"; do
    [[ "$out/$(basename "$manifest" .jsonl).summary.json" -nt "$model" ]] || unscored+=("$manifest")
  done
  [[ ${#unscored[@]} -eq 0 ]] || speechprune evaluate "$model" "${unscored[@]}" --out "$out" --threads "$threads"
}

# Every snapshot of the pruning run DIR scored on the MANIFESTs, into DIR/eval/sparsityNN.
# score_snapshots DIR MANIFEST...
score_snapshots() {
  local run_dir="$1" snapshot
  shift
  compgen -G "$run_dir/snapshots/sparsity*.pt" >/dev/null || {
    echo "run.sh: $run_dir/snapshots/ holds no sparsityNN.pt; did its pruning run finish?" >&2; exit 1; }
  for snapshot in "$run_dir"/snapshots/sparsity*.pt; do
    score "$snapshot" "$run_dir/eval/$(basename "$snapshot" .pt)" "$@"
  done
}

# The recipe's training of DIR on the training speech of CORPUS (stages 2, 9, 10); an interrupted one
# resumes. train_model DIR CORPUS [OPTION...]
train_model() {
  local dir="$1" corpus="$2"
  shift 2
  speechprune train --config conf/train.yaml --exp-dir "$dir" \
    --set data.train_manifests="$(train_manifests "$corpus")" \
    --set data.valid_manifest="$corpus/valid.jsonl" --set tokenizer.path="$data/lang/tokenizer.model" "$@"
}

# A model still on CTC's blank plateau (validation WER 100%) stops stages 2 and 10: pruning and timing it
# would measure nothing. The quick run's two epochs on a tiny corpus never leave it.
plateau=(--fail-on-plateau)
$quick && plateau=()

# Whether the finished training in DIR left CTC's blank plateau. `speechprune train --fail-on-plateau`
# says so once, on the run that ends there; a rerun finds its train_summary.json and must not prune the
# model as if it recognized anything. off_plateau DIR
off_plateau() {
  python -c 'import json, sys; from asr.metrics import blank_plateau
sys.exit(blank_plateau(json.load(open(sys.argv[1]))) is not None)' "$1/train_summary.json"
}

# Stages 9 and 10 train on stage 0's eSpeak NG strings with stage 1's units: name what is missing before a
# corpus is built, not after. need_stages_0_1 STAGE
need_stages_0_1() {
  local need
  for need in "$data/corpus/train_tts.jsonl" "$data/lang/tokenizer.model"; do
    [[ -f "$need" ]] || { echo "run.sh: stage $1: $need is missing; run stages 0-1 first" \
      "(bash run.sh --stop-stage 1)" >&2; exit 2; }
  done
}

# Optional strings in voices made from real speakers: synthetic_voices ENGINE COUNT INSTALL-HINT
synthetic_voices() {
  local engine=$1 count=$2 hint=$3 voices
  [[ $count -gt 0 ]] || return 0
  voices=$(python local/synthetic_voices.py "$engine")
  if [[ -z "$voices" ]]; then
    echo "== stage 0: no $engine voice installed, training without them (optional: $hint)"
    return 0
  fi
  $quick && count=40
  echo "== stage 0: $count strings in $engine voices ($voices) -> $data/$engine"
  speechprune synthesize-voices --engine "$engine" --out "$data/$engine" --count "$count"
}

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "== stage 0: connected-digit corpus from FSDD -> $data/corpus"
  speechprune prepare-fsdd "${fsdd_args[@]}" --download-to "$data/fsdd" --out "$data/corpus" \
    --tight-fraction "$tight_fraction" --join-tempo "$join_tempo" "${corpus_sizes[@]}"
  if [[ $more_espeak -gt 0 ]]; then
    $quick && more_espeak=40
    echo "== stage 0: $more_espeak more strings in eSpeak NG voices -> $data/espeak"
    speechprune synthesize-voices --engine espeak --out "$data/espeak" --count "$more_espeak"
  fi
  synthetic_voices mbrola "$mbrola_count" \
    "Debian non-free: apt-get install espeak-ng mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1"
  synthetic_voices flite "$flite_count" "Debian main: apt-get install flite"
fi

# Extra strings asked for but not on disk: say so before any training, rather than train without them
# unnoticed. eSpeak NG is always installed, so its strings missing means stage 0 ran without the option;
# MBROLA and Flite may simply not be installed (stage 0 said so), so those only warn.
if [[ $stop_stage -ge 2 ]]; then
  if [[ $more_espeak -gt 0 && ! -f "$data/espeak/train_espeak.jsonl" ]]; then
    echo "run.sh: --more-espeak $more_espeak: $data/espeak/train_espeak.jsonl is missing;" \
      "run stage 0 with the same option first" >&2
    exit 2
  fi
  for engine_count in "mbrola:$mbrola_count" "flite:$flite_count"; do
    engine=${engine_count%%:*}
    if [[ ${engine_count#*:} -gt 0 && ! -f "$data/$engine/train_$engine.jsonl" ]]; then
      echo "run.sh: warning: training without $engine strings: $data/$engine/train_$engine.jsonl is missing" >&2
    fi
  done
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  echo "== stage 1: $units SentencePiece units -> $data/lang/tokenizer.model"
  vocab_args=()
  [[ $units != char ]] && vocab_args=(--vocab-size "$vocab_size")
  speechprune train-tokenizer "$data/corpus/train.jsonl" "$data/corpus/train_tts.jsonl" \
    --out "$data/lang/tokenizer.model" --model-type "$units" "${vocab_args[@]}"
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  echo "== stage 2: Lightning CTC training -> $exp"
  train_model "$exp" "$data/corpus" "${plateau[@]}" "${extra[@]}"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  echo "== stage 3: greedy WER/CER and real-time factor ($threads thread) -> $exp/eval"
  # the held-out speaker twice: its pause-joined strings and the fluent probe (every join tight)
  speechprune evaluate "$exp/model.pt" "$data/corpus/test.jsonl" "$data/corpus/test_speaker.jsonl" \
    "$data/corpus/test_speaker_tight.jsonl" --out "$exp/eval" --threads "$threads"
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  echo "== stage 4: piece-level 3-gram LM; decoder settings tuned on the unpruned model's validation set"
  speechprune build-lm "$data/corpus/train.jsonl" "$data/corpus/train_tts.jsonl" --unit piece \
    --model "$exp/model.pt" --order 3 --out "$data/lang/lm_piece3.arpa"
  speechprune tune-decoder "$exp/model.pt" "$data/corpus/valid.jsonl" --out "$study_dir/decoders.json"
fi

if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
  for run in $(prune_run_names "$prune_runs" "$prune_seeds"); do
    prune_model 5 "$exp/model.pt" "$prune_dir/$run" "$data/corpus" "$run"
  done
fi

if [[ $stage -le 6 && $stop_stage -ge 6 ]]; then
  echo "== stage 6: study (WER, search size, encoder/decoder latency) -> $study_dir"
  runs=()
  for run in $(prune_run_names "$prune_runs" "$prune_seeds"); do runs+=("$prune_dir/$run"); done
  speechprune study --baseline "$exp/model.pt" --runs "${runs[@]}" \
    --manifest "$data/corpus/test.jsonl" --greedy-manifest "$data/corpus/test_speaker.jsonl" \
    --decoders "$study_dir/decoders.json" --lm "$data/lang/lm_piece3.arpa" --out "$study_dir" "${study_sizes[@]}" \
    --retune-manifest "$data/corpus/valid.jsonl" --retune-decoders flashlight flashlight-wide
fi

if [[ $stage -le 7 && $stop_stage -ge 7 ]]; then
  echo "== stage 7: latency search (encoder + decoder measured on this machine) -> $search_dir/$search_name"
  python local/make_calibration.py "$data/corpus/valid.jsonl" --out "$data/corpus/calibration.jsonl" \
    --count "$calibration_count"
  status=0
  speechprune search "$exp/model.pt" --config conf/search.yaml --exp-dir "$search_dir/$search_name" \
    --set search.calibration_manifest="$data/corpus/calibration.jsonl" \
    --set data.train_manifests="$(train_manifests "$data/corpus")" \
    --set data.valid_manifest="$data/corpus/valid.jsonl" \
    --test "$data/corpus/test.jsonl" "$data/corpus/test_speaker.jsonl" "${search_extra[@]}" || status=$?
  # status 1: a budget was out of reach (named above, results written); anything else is a failure
  [[ $status -le 1 ]] || exit $status
fi

if [[ $stage -le 8 && $stop_stage -ge 8 ]]; then
  echo "== stage 8: search study (uniform / macs / encoder / end_to_end / co-tuned / entropy x two decoders) -> $search_dir/study"
  [[ -f "$data/corpus/calibration.jsonl" ]] || python local/make_calibration.py "$data/corpus/valid.jsonl" \
    --out "$data/corpus/calibration.jsonl" --count "$calibration_count"
  [[ -f "$data/lang/lm_piece3.arpa" ]] || speechprune build-lm "$data/corpus/train.jsonl" \
    "$data/corpus/train_tts.jsonl" --unit piece --model "$exp/model.pt" --order 3 --out "$data/lang/lm_piece3.arpa"
  speechprune search-study "$exp/model.pt" --config conf/search.yaml --study conf/search_study.yaml \
    --exp-dir "$search_dir/study" --study-set decoders.wide.lm_path="$data/lang/lm_piece3.arpa" \
    --set search.calibration_manifest="$data/corpus/calibration.jsonl" \
    --set data.train_manifests="$(train_manifests "$data/corpus")" \
    --set data.valid_manifest="$data/corpus/valid.jsonl" \
    --test "$data/corpus/test.jsonl" "$data/corpus/test_speaker.jsonl" "${search_extra[@]}" "${study_extra[@]}"
fi

if [[ $stage -le 9 && $stop_stage -ge 9 ]]; then
  # New-voice accuracy: for each FSDD speaker, a corpus whose held-out speaker it is, a model trained
  # without it (same recipe, same eSpeak NG strings, same units) and greedy WER on its strings.
  loso_dir=$(dirname "$exp")/loso/$loso_name
  echo "== stage 9: leave-one-speaker-out ($loso_name) -> $loso_dir"
  loso_train=("${extra[@]}")
  [[ -n "$loso_epochs" ]] && loso_train=(--set trainer.max_epochs="$loso_epochs" "${loso_train[@]}")
  speakers=$(python local/fsdd_speakers.py "${fsdd_args[@]}")
  # one spelling of the excluded set whatever its order or spacing: it names the folds' corpus folder
  loso_exclude=$(printf '%s\n' $loso_exclude | sort -u | paste -sd ' ')
  if [[ -n "$loso_exclude" && $loso_name == recipe ]]; then
    echo "run.sh: --loso-exclude needs its own --loso-name (folds of 'recipe' train on every speaker)" >&2; exit 2
  fi
  for speaker in $loso_speakers $loso_exclude; do
    grep -qxF "$speaker" <<<"$speakers" || { echo "run.sh: --loso-speakers/--loso-exclude: no FSDD speaker" \
      "'$speaker' (there are: $(echo $speakers))" >&2; exit 2; }
  done
  folds=()
  for speaker in ${loso_speakers:-$speakers}; do
    if grep -qwF "$speaker" <<<"$loso_exclude"; then
      [[ -z "$loso_speakers" ]] && continue
      echo "run.sh: --loso-speakers: '$speaker' is also in --loso-exclude" >&2; exit 2
    fi
    folds+=("$speaker")
  done
  [[ ${#folds[@]} -gt 0 ]] || { echo "run.sh: --loso-exclude leaves no speaker to hold out" >&2; exit 2; }
  exclude_args=()
  [[ -n "$loso_exclude" ]] && exclude_args=(--exclude-speakers $loso_exclude)
  need_stages_0_1 9
  for speaker in "${folds[@]}"; do
    corpus=$data/loso/corpus_${speaker}_tight${tight_fraction}
    [[ $join_tempo == 1 || $join_tempo == 1.0 ]] || corpus+=_tempo${join_tempo}
    [[ -n "$loso_exclude" ]] && corpus+=_without_$(tr ' ' _ <<<"$loso_exclude")
    fold=$loso_dir/$speaker
    # scored on the speaker's pause-joined strings and on the fluent probe (every join tight); a fold
    # trained before the probe existed is only scored on the probe
    scored=true
    [[ -f "$fold/eval/test_speaker.summary.json" && -f "$fold/eval/test_speaker_tight.summary.json" ]] || scored=false
    $scored && [[ -z "$loso_prune" ]] && continue
    echo "== stage 9: without $speaker"
    speechprune prepare-fsdd "${fsdd_args[@]}" --out "$corpus" --heldout-speaker "$speaker" \
      --tight-fraction "$tight_fraction" --join-tempo "$join_tempo" "${exclude_args[@]}" "${corpus_sizes[@]}" \
      --tts-count 0 >/dev/null
    [[ -f "$fold/train_summary.json" ]] || train_model "$fold" "$corpus" "${loso_train[@]}"
    score "$fold/model.pt" "$fold/eval" "$corpus/test_speaker.jsonl" "$corpus/test_speaker_tight.jsonl"
    [[ -n "$loso_prune" ]] || continue
    if ! $quick && ! off_plateau "$fold"; then
      echo "== stage 9: $speaker: its model is still on CTC's blank plateau; not pruned" >&2; continue
    fi
    # what pruning costs a voice the model never heard, beside what it costs the training speakers' own
    # unheard takes (test.jsonl), so the unpruned fold is scored there too
    score "$fold/model.pt" "$fold/eval" "$corpus/test.jsonl"
    for run in $loso_prune; do
      prune_model 9 "$fold/model.pt" "$fold/prune/$run" "$corpus" "$run"
      score_snapshots "$fold/prune/$run" "$corpus/test_speaker.jsonl" "$corpus/test_speaker_tight.jsonl" \
        "$corpus/test.jsonl"
    done
  done
  python local/loso_summary.py "$loso_dir" ${loso_against:+--against "$(dirname "$loso_dir")/$loso_against"}
  [[ -z "$loso_prune" ]] || python local/loso_pruning.py "$loso_dir" --runs $loso_prune
fi

if [[ $stage -le 10 && $stop_stage -ge 10 ]]; then
  # The model to deploy to voices FSDD does not have: the recipe trained on every speaker, theo too. Held
  # out of training, one speaker fewer cost new voices 3 points (docs/new_voices.md, "One training speaker
  # fewer"); what a sixth speaker gains cannot be measured on FSDD (no seventh), so stages 2-8 keep theo out.
  all_dir=$(dirname "$exp")/all_speakers
  corpus=$data/corpus_all_speakers_tight${tight_fraction}
  [[ $join_tempo == 1 || $join_tempo == 1.0 ]] || corpus+=_tempo${join_tempo}
  echo "== stage 10: every speaker trains -> $all_dir"
  need_stages_0_1 10
  speechprune prepare-fsdd "${fsdd_args[@]}" --out "$corpus" --all-speakers --tight-fraction "$tight_fraction" \
    --join-tempo "$join_tempo" "${corpus_sizes[@]}" --tts-count 0 >/dev/null
  # a finished training is kept as it is (a rerun prunes what is missing); an interrupted one resumes
  [[ -f "$all_dir/train_summary.json" ]] || train_model "$all_dir" "$corpus" "${plateau[@]}" "${extra[@]}"
  if ! $quick && ! off_plateau "$all_dir"; then
    echo "run.sh: stage 10: $all_dir/model.pt is still on CTC's blank plateau; remove $all_dir and train" \
      "longer (--set trainer.max_epochs=N, --set trainer.max_time=...)" >&2; exit 1
  fi
  score "$all_dir/model.pt" "$all_dir/eval" "$corpus/test.jsonl"
  # its pruned snapshots, the files to put on a board: the runs of --prune-runs, scored on the same strings
  for run in $(prune_run_names "$prune_runs" "$prune_seeds"); do
    prune_model 10 "$all_dir/model.pt" "$all_dir/prune/$run" "$corpus" "$run"
    score_snapshots "$all_dir/prune/$run" "$corpus/test.jsonl"
  done
fi
