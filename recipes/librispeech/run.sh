#!/usr/bin/env bash
# LibriSpeech: data -> units -> LMs -> train -> evaluate -> decoder tuning -> prune -> study.
#
#   bash run.sh --corpus /data/LibriSpeech                 # everything, from stage 0 (needs a GPU for stage 3)
#   bash run.sh --corpus /data/LibriSpeech --download      # fetch missing subsets from openslr first
#   bash run.sh --corpus DIR --model edge                  # the 3 x 320 edge model instead of the paper's 4 x 1024
#   bash run.sh --corpus DIR --gpus 4 --stage 3 --stop-stage 3   # train on 4 GPUs (Lightning DDP)
#   bash run.sh --corpus DIR --stage 6 --prune-runs "mnp_vanilla mnp_entropy"
#   bash run.sh --corpus DIR --stage 6 --prune-runs "mnp_vanilla mnp_entropy@3" --prune-seeds "1 2"  # lambda 3, two seeds
#
# Stages are restartable: each one skips or resumes work that is already done.
set -euo pipefail
cd "$(dirname "$0")"
. ../common/prune_runs.sh

stage=0
stop_stage=7
corpus=""
download=()
model=paper
gpus=auto
train_subsets="train-clean-100"
dev=dev-clean
tests="test-clean test-other"
prune_runs="mnp_vanilla mnp_entropy vib_vanilla vib_entropy"
entropy_weight=1.0      # not measured here; the digits recipe's lambda sweep chose 3 (the term's scale depends on the units)
prune_seeds=""          # "1 2": every pruning run once per seed (folders RUN_seedN); the study gives mean and spread
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage="$2"; shift 2 ;;
    --stop-stage) stop_stage="$2"; shift 2 ;;
    --corpus) corpus="$2"; shift 2 ;;
    --download) download=(--download); shift ;;
    --model) model="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --train-subsets) train_subsets="$2"; shift 2 ;;
    --prune-runs) prune_runs="$2"; shift 2 ;;
    --entropy-weight) entropy_weight="$2"; shift 2 ;;
    --prune-seeds) prune_seeds="$2"; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$(basename "$0")"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$corpus" ]]; then
  echo "run.sh: --corpus DIR is required (the folder holding train-clean-100/, dev-clean/, ...)" >&2
  exit 2
fi
if ! command -v speechprune >/dev/null; then
  echo "run.sh: 'speechprune' is not on PATH; activate the virtualenv (see README)" >&2
  exit 2
fi

data=data exp=exp/$model
manifests=$data/manifests
train_manifests=""
for s in $train_subsets; do train_manifests+="${train_manifests:+,}$manifests/$s.jsonl"; done

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "== stage 0: manifests from $corpus -> $manifests"
  # shellcheck disable=SC2086
  speechprune prepare-librispeech --root "$corpus" --subsets $train_subsets $dev $tests --out "$manifests" \
    "${download[@]}"
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  echo "== stage 1: 256 unigram SentencePiece units -> $data/lang/tokenizer.model"
  # shellcheck disable=SC2086
  speechprune train-tokenizer ${train_manifests//,/ } --out "$data/lang/tokenizer.model" \
    --model-type unigram --vocab-size 256
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  echo "== stage 2: word 3-gram LM (for transcribe) and piece 3-gram LM (for the study) from training text"
  # shellcheck disable=SC2086
  speechprune build-lm ${train_manifests//,/ } --unit word --order 3 --out "$data/lang/lm_word3.arpa"
  # shellcheck disable=SC2086
  speechprune build-lm ${train_manifests//,/ } --unit piece --order 3 \
    --tokenizer "$data/lang/tokenizer.model" --out "$data/lang/lm_piece3.arpa"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  echo "== stage 3: Lightning CTC training ($model model, devices=$gpus) -> $exp/baseline"
  speechprune train --config "conf/train_$model.yaml" --exp-dir "$exp/baseline" \
    --set data.train_manifests="[$train_manifests]" --set data.valid_manifest="$manifests/$dev.jsonl" \
    --set tokenizer.path="$data/lang/tokenizer.model" --set trainer.devices="$gpus" "${extra[@]}"
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  echo "== stage 4: greedy WER -> $exp/baseline/eval"
  test_manifests=()
  for s in $tests; do test_manifests+=("$manifests/$s.jsonl"); done
  speechprune evaluate "$exp/baseline/model.pt" "${test_manifests[@]}" --out "$exp/baseline/eval" --threads 1
fi

if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
  echo "== stage 5: decoder settings tuned on $dev with the unpruned model"
  speechprune tune-decoder "$exp/baseline/model.pt" "$manifests/$dev.jsonl" --out "$exp/study/decoders.json"
fi

if [[ $stage -le 6 && $stop_stage -ge 6 ]]; then
  for run in $(prune_run_names "$prune_runs" "$prune_seeds"); do
    prune_run_options "$run" "$entropy_weight"
    if [[ -f "$exp/prune/$run/prune_summary.json" ]]; then
      echo "== stage 6: $run already done"; continue
    fi
    echo "== stage 6: pruning run $run -> $exp/prune/$run"
    speechprune prune "$exp/baseline/model.pt" --config conf/prune.yaml --exp-dir "$exp/prune/$run" \
      --set data.train_manifests="[$train_manifests]" --set data.valid_manifest="$manifests/$dev.jsonl" "${opts[@]}"
  done
fi

if [[ $stage -le 7 && $stop_stage -ge 7 ]]; then
  echo "== stage 7: study on test-clean -> $exp/study"
  runs=()
  for run in $(prune_run_names "$prune_runs" "$prune_seeds"); do runs+=("$exp/prune/$run"); done
  speechprune study --baseline "$exp/baseline/model.pt" --runs "${runs[@]}" \
    --manifest "$manifests/test-clean.jsonl" --greedy-manifest "$manifests/test-other.jsonl" \
    --decoders "$exp/study/decoders.json" --lm "$data/lang/lm_piece3.arpa" --out "$exp/study" --limit 500
fi
