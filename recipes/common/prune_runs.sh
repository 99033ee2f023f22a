# Sourced by the recipes' run.sh: the named pruning runs of a study, as `speechprune prune` overrides.
#   prune_run_options RUN ENTROPY_WEIGHT   sets the array `opts`, or fails naming the unknown run.

prune_run_options() {
  local run="$1" weight="$2"
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
    *) echo "run.sh: unknown pruning run $run (known: mnp_vanilla mnp_entropy vib_vanilla vib_entropy mnp_nonblank mnp_tailmass mnp_softnonblank mnp_margin mnp_distill)" >&2
       return 2 ;;
  esac
}
