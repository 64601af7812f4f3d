#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for test_slurm (../shared/recipes/slurm-local.md
# has the facts it rests on). As root:
#
#   tests/slurm/cluster.sh start DIR   writes DIR/slurm.conf, starts munged (unless one
#                                      answers already), slurmctld and slurmd, and waits
#                                      until the node is idle; prints SLURM_CONF=DIR/slurm.conf
#   tests/slurm/cluster.sh stop DIR    stops the daemons it started, by the pids in DIR
#
# Everything the daemons keep (state, spool, logs, pid files) lives in DIR; they listen on
# ports 16817/16818, so a cluster the machine may already run is left alone. Run every
# Slurm command with SLURM_CONF=DIR/slurm.conf.
set -euo pipefail

mode=${1:?start or stop}
dir=$(mkdir -p "${2:?the cluster folder}" && cd "$2" && pwd)
export SLURM_CONF=$dir/slurm.conf

stop_pidfile() { # stops the process in $1 (if it is still that process) and waits for it
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

if [ "$mode" = stop ]; then
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munge/munged.pid" # only there when this script started munged
  exit 0
fi
[ "$mode" = start ] || { echo "cluster.sh: unknown mode '$mode' (start, stop)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "cluster.sh: needs root (the daemons run as root and munge)" >&2; exit 1; }

# munge: Slurm's authentication. A munged that answers already is used as it is.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge "$dir/munge" # munged writes its pid file as munge
  runuser -u munge -- /usr/sbin/munged --pid-file="$dir/munge/munged.pid" --force
  munge -n | unmunge >/dev/null || { echo "cluster.sh: munged does not answer" >&2; exit 1; }
fi

host=$(hostname -s)
memory=$(($(free -m | awk '/^Mem:/ {print $2}') * 9 / 10))
mkdir -p "$dir/state" "$dir/spool"
cat >"$SLURM_CONF" <<CONF
ClusterName=kvscope-test
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -i # -i: ignore state a previous cluster in this folder left
slurmd
for _ in $(seq 150); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  [ "$state" = idle ] && { echo "SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.2
done
echo "cluster.sh: the node did not become idle (state '${state:-none}'); logs in $dir" >&2
exit 1
