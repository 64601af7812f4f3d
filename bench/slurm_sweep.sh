#!/usr/bin/env bash
# A `kvscope sweep` across a Slurm cluster: a job array with one task per shard, each
# writing its own sessions database, and a job that merges them once every shard succeeded.
#
#   bench/slurm_sweep.sh submit OUT_DIR SHARDS [kvscope sweep options...]
#   bench/slurm_sweep.sh status OUT_DIR
#
#   bench/slurm_sweep.sh submit ~/sweeps/pk 8 --methods snapkv,h2o,oracle --budgets 64,128,256 \
#       --tasks passkey,text --seeds 0,1,2
#
# What lands in OUT_DIR (which must be on a file system every node sees):
#   shard-<i>.db   shard i's runs (kvscope sweep --shard i/SHARDS)
#   all.db         every shard merged (kvscope sessions merge); then
#                  kvscope compare --sweep NAME --db OUT_DIR/all.db prints the table
#   logs/          each job's output: sweep-<job>_<task>.out, merge-<job>.out
#   jobs           the job ids of each submission ("array ID", "merge ID", "shards N")
#
# `status` shows the jobs in the queue and how many of the sweep's cells the shards hold.
#
# Resume after a cancelled or failed task (scancel, a node failure, a kill): submit the same
# command again. Each shard skips the cells its database holds, so only the missing work
# runs, and the merge adds each run once. The first merge job, whose array did not succeed
# and so can never start, is cancelled; a submission whose array is still queued or
# running is refused.
#
# The cluster: sbatch reads SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT and the like
# from the environment; other options for the shards' jobs (a GPU each: --gres=gpu:1) go in
# SWEEP_SBATCH. KVSCOPE is the kvscope binary the nodes run (default: this checkout's
# build/kvscope).
set -euo pipefail

usage() { sed -n '2,32p' "$0" >&2; exit 2; }
die() { echo "slurm_sweep.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || usage
mode=$1
out=$(mkdir -p "$2" && cd "$2" && pwd)
kvscope=${KVSCOPE:-$(cd "$(dirname "$0")/.." && pwd)/build/kvscope}
[ -x "$kvscope" ] || die "no kvscope at $kvscope (build it, or set KVSCOPE)"

last_job() { # the id of the latest submission's job of kind $1 ("array", "merge"), if any
  [ -f "$out/jobs" ] && awk -v kind="$1" '$1 == kind {id = $2} END {if (id) print id}' "$out/jobs"
}
queued() { # whether the job (or any task of the array) $1 is still in the queue
  [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]
}

status() {
  local array merge
  array=$(last_job array || true)
  merge=$(last_job merge || true)
  if [ -n "$array" ]; then squeue -j "$array,$merge" 2>/dev/null || true; fi
  local dbs=("$out"/shard-*.db)
  [ -e "${dbs[0]}" ] || { echo "no shard database in $out yet"; return; }
  "$kvscope" sessions progress "${dbs[@]}"
  [ -f "$out/all.db" ] && { echo "merged, in $out/all.db:"; "$kvscope" sessions progress "$out/all.db"; }
  return 0
}

submit() {
  local shards=$1
  shift
  [[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "SHARDS must be a positive count, not '$shards'"
  local previous
  previous=$(last_job array || true)
  if [ -n "$previous" ] && queued "$previous"; then
    die "the last submission's array $previous is still in the queue: wait for it, or scancel $previous"
  fi
  previous=$(last_job merge || true)
  if [ -n "$previous" ] && queued "$previous"; then scancel "$previous"; fi # its array did not succeed
  mkdir -p "$out/logs"

  # The shard's command, quoted for the job's shell; its index is the array task's, read
  # when the task runs.
  local sweep array merge dbs=()
  sweep=$(printf '%q ' "$kvscope" sweep "$@")
  # shellcheck disable=SC2086  # SWEEP_SBATCH is a list of sbatch options
  array=$(sbatch --parsable ${SWEEP_SBATCH:-} --job-name=kvscope-sweep --array="0-$((shards - 1))" \
          --output="$out/logs/sweep-%A_%a.out" \
          --wrap="exec $sweep --shard \${SLURM_ARRAY_TASK_ID}/$shards --db $(printf '%q' "$out")/shard-\${SLURM_ARRAY_TASK_ID}.db")
  array=${array%%;*} # "id;cluster" on a multi-cluster setup
  for ((i = 0; i < shards; ++i)); do dbs+=("$out/shard-$i.db"); done
  merge=$(sbatch --parsable --job-name=kvscope-merge --dependency="afterok:$array" \
          --output="$out/logs/merge-%j.out" \
          --wrap="exec $(printf '%q ' "$kvscope" sessions merge --db "$out/all.db" "${dbs[@]}")")
  merge=${merge%%;*}
  printf 'shards %s\narray %s\nmerge %s\n' "$shards" "$array" "$merge" >>"$out/jobs"

  echo "submitted: sweep array $array ($shards tasks), merge $merge after it"
  echo "progress:  $0 status $out"
  echo "then:      $kvscope compare --sweep NAME --db $out/all.db   (NAME: in the merge log)"
}

case "$mode" in
  submit) [ $# -ge 3 ] || usage; shift 2; submit "$@" ;;
  status) status ;;
  *) usage ;;
esac
