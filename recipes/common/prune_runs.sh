# Sourced by the recipes' run.sh: the named pruning runs of a study, as `speechprune prune` overrides.
#   prune_run_names "RUNS" "SEEDS"     every run once per seed: RUN_seedN (SEEDS empty: RUN, the config's seed)
#   prune_run_options NAME ENTROPY_WEIGHT   sets the array `opts`, or fails naming the unknown run.
# A name is RUN[@WEIGHT][_seedN]: `mnp_entropy@3_seed2` is MNP with the term at lambda 3, seed 2, so a lambda
# sweep repeated over seeds is one --prune-runs list (the study reports the seeds' mean and spread).

prune_run_names() {
  local run seed
  for run in $1; do
    if [[ -z "$2" ]]; then echo "$run"; else for seed in $2; do echo "${run}_seed$seed"; done; fi
  done
}

prune_run_options() {
  local name="$1" weight="$2" seed="" run
  if [[ "$name" =~ ^(.*)_seed([0-9]+)$ ]]; then name="${BASH_REMATCH[1]}" seed="${BASH_REMATCH[2]}"; fi
  run="${name%%@*}"
  if [[ "$name" == *@* ]]; then
    weight="${name#*@}"
    if [[ "$run" == *_vanilla ]]; then
      echo "run.sh: pruning run $1: a vanilla run has no regularizer weight (lambda is 0); drop @$weight" >&2
      return 2
    fi
  fi
  case "$run" in
    mnp_vanilla) opts=(--set prune.criterion=mnp --set regularizer.weight=0) ;;
    mnp_entropy) opts=(--set prune.criterion=mnp --set regularizer.weight="$weight") ;;
    vib_vanilla) opts=(--set prune.criterion=vib --set prune.schedule.start_epoch=1 --set regularizer.weight=0) ;;
    vib_entropy) opts=(--set prune.criterion=vib --set prune.schedule.start_epoch=1 --set regularizer.weight="$weight") ;;
    # extensions beside the paper's term: penalize only where the search branches
    mnp_nonblank) opts=(--set prune.criterion=mnp --set regularizer.kind=nonblank_entropy --set regularizer.weight="$weight") ;;
    mnp_tailmass) opts=(--set prune.criterion=mnp --set regularizer.kind=tail_mass --set regularizer.weight="$weight") ;;
    mnp_softnonblank) opts=(--set prune.criterion=mnp --set regularizer.kind=soft_nonblank_entropy --set regularizer.weight="$weight") ;;
    mnp_margin) opts=(--set prune.criterion=mnp --set regularizer.kind=margin --set regularizer.weight="$weight") ;;
    # distillation from the unpruned model the run starts from (the teacher)
    mnp_distill) opts=(--set prune.criterion=mnp --set regularizer.kind=distillation --set regularizer.weight="$weight") ;;
    *) echo "run.sh: unknown pruning run $1 (known: mnp_vanilla mnp_entropy vib_vanilla vib_entropy mnp_nonblank mnp_tailmass mnp_softnonblank mnp_margin mnp_distill, each RUN[@WEIGHT][_seedN])" >&2
       return 2 ;;
  esac
  if ! [[ "$weight" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; then
    echo "run.sh: pruning run $1: the weight '$weight' is not a number" >&2
    return 2
  fi
  # a seed draws everything a run draws: batch order (data.seed), augmentation, dropout, VIB gate noise
  if [[ -n "$seed" ]]; then opts+=(--set seed="$seed" --set data.seed="$seed" --set prune.seed="$seed"); fi
}
