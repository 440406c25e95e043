#!/bin/bash
# Tear down the two-node cluster made by up.sh. Idempotent. Kills only processes inside our namespaces and the munged
# whose pidfile and socket are ours, by PID; logs in $R/log stay for a look after a failure.
set -u
R=${MPIFL_SLURM2_ROOT:-/tmp/mpifl-slurm2}
NETNS="mpifl2-head mpifl2-n1 mpifl2-n2"
ns_pids() { for ns in $NETNS; do [ -e /run/netns/$ns ] && ip netns pids $ns 2>/dev/null; done; }
kill_pids() { local sig=$1; shift; for p in "$@"; do kill -"$sig" "$p" 2>/dev/null; done; }

pids=$(ns_pids | sort -u)
if [ -n "$pids" ]; then
  kill_pids TERM $pids
  for i in $(seq 40); do pids=$(ns_pids | sort -u); [ -z "$pids" ] && break; sleep 0.25; done
  [ -n "$pids" ] && kill_pids KILL $pids
  for i in $(seq 20); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
fi
for ns in $NETNS; do [ -e /run/netns/$ns ] && ip netns del $ns; done

if [ -s "$R/munge/munged.pid" ]; then
  p=$(cat "$R/munge/munged.pid")
  if tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q -- "--socket=$R/munge/munge.socket"; then
    kill "$p"; for i in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$R/munge/munged.pid"
fi
rm -f "$R/munge/munge.socket" "$R/munge/munge.socket.lock"
rm -rf "$R/state" "$R/spool" "$R/run" "$R/tmp"
ip route del unreachable 10.78.0.0/24 2>/dev/null
echo "two-node cluster down"; true
