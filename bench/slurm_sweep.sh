#!/usr/bin/env bash
# A `kvscope sweep` across a Slurm cluster: a job array with one task per shard, each
# writing its own sessions database, and a job that merges them once every shard succeeded.
#
#   bench/slurm_sweep.sh OUT_DIR SHARDS [kvscope sweep options...]
#
#   bench/slurm_sweep.sh ~/sweeps/pk 8 --methods snapkv,h2o,oracle --budgets 64,128,256 \
#       --tasks passkey,text --seeds 0,1,2
#
# What lands in OUT_DIR (which must be on a file system every node sees):
#   shard-<i>.db   shard i's runs (kvscope sweep --shard i/SHARDS)
#   all.db         every shard merged (kvscope sessions merge); then
#                  kvscope compare --sweep NAME --db OUT_DIR/all.db prints the table
#   logs/          each job's output: sweep-<job>_<task>.out, merge-<job>.out
#
# Resume after a cancelled or failed task: run the same command again. Each shard skips the
# cells its database holds, so only the missing work runs, and the merge adds each run once.
# The merge job waits for the whole array (afterok): if a task fails, it never starts, and
# the next submission merges everything.
#
# The cluster: sbatch reads SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT and the like
# from the environment; anything else (a GPU per task: --gres=gpu:1) goes in SWEEP_SBATCH.
# KVSCOPE is the kvscope binary the nodes run (default: this checkout's build/kvscope).
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,25p' "$0" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shards=$2
shift 2
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_sweep.sh: SHARDS must be a positive count, not '$shards'" >&2; exit 2; }
kvscope=${KVSCOPE:-$(cd "$(dirname "$0")/.." && pwd)/build/kvscope}
[ -x "$kvscope" ] || { echo "slurm_sweep.sh: no kvscope at $kvscope (build it, or set KVSCOPE)" >&2; exit 2; }
mkdir -p "$out/logs"

# The shard's command, quoted for the job's shell; its index is the array task's, read
# when the task runs.
sweep=$(printf '%q ' "$kvscope" sweep "$@")
shard_db="$(printf '%q' "$out")/shard-\${SLURM_ARRAY_TASK_ID}.db"
# shellcheck disable=SC2086  # SWEEP_SBATCH is a list of sbatch options
array=$(sbatch --parsable ${SWEEP_SBATCH:-} --job-name=kvscope-sweep --array="0-$((shards - 1))" \
        --output="$out/logs/sweep-%A_%a.out" \
        --wrap="exec $sweep --shard \${SLURM_ARRAY_TASK_ID}/$shards --db $shard_db")
array=${array%%;*} # "jobid;cluster" on a multi-cluster setup

dbs=()
for ((i = 0; i < shards; ++i)); do dbs+=("$out/shard-$i.db"); done
merge=$(sbatch --parsable --job-name=kvscope-merge --dependency="afterok:$array" \
        --output="$out/logs/merge-%j.out" \
        --wrap="exec $(printf '%q ' "$kvscope" sessions merge --db "$out/all.db" "${dbs[@]}")")
merge=${merge%%;*}

echo "submitted: sweep array $array ($shards tasks), merge $merge after it"
echo "watch:     squeue -j $array,$merge"
echo "then:      tail $out/logs/merge-$merge.out"
