#!/usr/bin/env bash
# FSDD connected digits: data -> tokenizer -> train -> evaluate.
#
#   bash run.sh                          # everything, from stage 0
#   bash run.sh --stage 2 --stop-stage 2 # only training (resumes from the last checkpoint)
#   bash run.sh --quick                  # minutes-long smoke run on a tiny corpus
#   bash run.sh --fsdd-dir /path/to/fsdd # FSDD elsewhere (default: ../shared/data/fsdd, else download)
#   bash run.sh --units char             # character units instead of whole-word unigram pieces
#
# Stages are restartable: each one skips or resumes work that is already done.
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=3
quick=false
fsdd_dir=""
threads=1               # inference threads for evaluation timings (a one-core edge device)
# Output units: a unigram SentencePiece model of 28 pieces holds every digit word as one unit ("▁seven") plus
# the 16 letters it needs for coverage, so greedy CTC can only emit real words. Characters (--units char)
# spelled 74% of their word errors as non-words ("fivee") in our measurements.
units=unigram
vocab_size=28
extra=()                # extra --set overrides for training

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
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
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
else
  data=data exp=exp/baseline
  corpus_sizes=()
fi
fsdd_args=()
[[ -n "$fsdd_dir" ]] && fsdd_args=(--fsdd-dir "$fsdd_dir")

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "== stage 0: connected-digit corpus from FSDD -> $data/corpus"
  speechprune prepare-fsdd "${fsdd_args[@]}" --download-to "$data/fsdd" --out "$data/corpus" \
    "${corpus_sizes[@]}"
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
  speechprune train --config conf/train.yaml --exp-dir "$exp" \
    --set data.train_manifests="[$data/corpus/train.jsonl,$data/corpus/train_tts.jsonl]" \
    --set data.valid_manifest="$data/corpus/valid.jsonl" \
    --set tokenizer.path="$data/lang/tokenizer.model" \
    "${extra[@]}"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  echo "== stage 3: greedy WER/CER and real-time factor ($threads thread) -> $exp/eval"
  speechprune evaluate "$exp/model.pt" "$data/corpus/test.jsonl" "$data/corpus/test_speaker.jsonl" \
    --out "$exp/eval" --threads "$threads"
fi
