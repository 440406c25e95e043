#!/bin/bash
# A two-node SLURM cluster on one machine for the multi-node tests (root, Debian 12, no systemd, no cgroups).
# Adapted from ../shared/recipes/slurm-two-node; lives beside the single-node test cluster (../up.sh) without touching
# it: own namespaces, subnet, munged, config and state, all under $R; /etc/slurm and /run/munge are not used.
#   netns mpifl2-head : bridge m2br0 10.78.0.1/24, slurmctld (hostname m2head)
#   netns mpifl2-n1   : eth0 10.78.0.11/24, slurmd (hostname n1, own /dev/shm), 2 fake GPUs
#   netns mpifl2-n2   : eth0 10.78.0.12/24, slurmd (hostname n2, own /dev/shm), 2 fake GPUs
# Each slurmd has its own network, hostname and mount namespace, so Open MPI sees two hosts and traffic between them
# crosses a veth link. Clients: export PATH=$R/bin:$PATH (wrappers enter the head's netns and set SLURM_CONF).
set -euo pipefail
R=${MPIFL_SLURM2_ROOT:-/tmp/mpifl-slurm2}
NGPU=${FAKE_GPUS_PER_NODE:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
NETNS="mpifl2-head mpifl2-n1 mpifl2-n2"
t0=$(date +%s.%N)
need=()
for b in slurmctld slurmd srun munged ip unshare nsenter; do command -v $b >/dev/null || need+=($b); done
[ ${#need[@]} -eq 0 ] || { echo "missing: ${need[*]} (apt-get install slurmctld slurmd slurm-client munge libpmix-dev iproute2 util-linux)" >&2; exit 3; }

"$HERE/down.sh" >/dev/null 2>&1 || true   # idempotent: start from a clean slate
rm -rf "$R/log"
mkdir -p "$R"/{etc,bin,munge,state,log,run,spool,dev}
chmod 755 "$R" "$R/munge" "$R/spool"

# ---- munge on a private socket and key (the single-node cluster's munged is not touched) ----
[ -s "$R/munge/munge.key" ] || dd if=/dev/urandom of="$R/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$R/munge/munge.key"
/usr/sbin/munged --socket="$R/munge/munge.socket" --key-file="$R/munge/munge.key" \
  --pid-file="$R/munge/munged.pid" --log-file="$R/log/munged.log" --seed-file="$R/munge/munge.seed"
for i in $(seq 50); do [ -S "$R/munge/munge.socket" ] && break; sleep 0.1; done
munge -S "$R/munge/munge.socket" -n | unmunge -S "$R/munge/munge.socket" >/dev/null

# ---- network: 3 namespaces, a bridge in the head's, one veth per node ----
# Guard: in the host namespace the test subnet is unreachable, so no packet for it can leave the machine by the
# default route (a client run outside our namespaces by mistake fails at once instead).
ip route replace unreachable 10.78.0.0/24
for ns in $NETNS; do ip netns add $ns; done
ip -n mpifl2-head link set lo up
ip -n mpifl2-head link add m2br0 type bridge
ip -n mpifl2-head addr add 10.78.0.1/24 dev m2br0
ip -n mpifl2-head link set m2br0 up
i=10
for n in n1 n2; do
  i=$((i+1))
  ip -n mpifl2-head link add m2v-$n type veth peer name eth0 netns mpifl2-$n
  ip -n mpifl2-head link set m2v-$n master m2br0 up
  ip -n mpifl2-$n link set lo up
  ip -n mpifl2-$n addr add 10.78.0.$i/24 dev eth0
  ip -n mpifl2-$n link set eth0 up
done
printf '127.0.0.1 localhost\n10.78.0.1 m2head\n10.78.0.11 n1\n10.78.0.12 n2\n' > "$R/etc/hosts"

# ---- fake GPUs: char devices, so gres/gpu binding (CUDA_VISIBLE_DEVICES) is exercised without hardware ----
for g in $(seq 0 $((NGPU-1))); do [ -c "$R/dev/gpu$g" ] || mknod "$R/dev/gpu$g" c 1 3; done
printf 'AutoDetect=off\nNodeName=n[1-2] Name=gpu File=%s/dev/gpu[0-%d]\n' "$R" $((NGPU-1)) > "$R/etc/gres.conf"

# ---- slurm config (gres.conf is read from beside it) ----
cat > "$R/etc/slurm.conf" <<CONF
ClusterName=mpifl2
SlurmctldHost=m2head(10.78.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start once its old credential expires: 10 s instead of the default 120 s keeps tests short
AuthInfo=socket=$R/munge/munge.socket,cred_expire=10
# ... and the backfill scheduler starts it within a second after that, instead of up to 30 s later
SchedulerParameters=bf_interval=1
StateSaveLocation=$R/state
SlurmdSpoolDir=$R/spool/%n
# per-node TmpFS: mpi/pmix puts spmix_appdir_<uid>_<job>.<step> there; a shared /tmp makes the 2nd node fail (EEXIST)
TmpFS=$R/tmp/%n
SlurmctldPidFile=$R/run/slurmctld.pid
SlurmdPidFile=$R/run/slurmd-%n.pid
SlurmctldLogFile=$R/log/slurmctld.log
SlurmdLogFile=$R/log/slurmd-%n.log
PlugStackConfig=$R/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$R/log/jobcomp.log
SlurmdParameters=config_overrides
NodeName=n1 NodeAddr=10.78.0.11 CPUs=8 RealMemory=4000 Gres=gpu:$NGPU State=UNKNOWN
NodeName=n2 NodeAddr=10.78.0.12 CPUs=8 RealMemory=4000 Gres=gpu:$NGPU State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
: > "$R/etc/plugstack.conf"

# client wrappers: already inside one of our netns (e.g. a batch script on n1) -> run directly; anywhere else ->
# enter the head's netns. (Fail-safe: never talk to 10.78.0.1 from the host netns.)
for c in srun sbatch salloc sinfo squeue scontrol scancel sattach sbcast sstat; do
  cat > "$R/bin/$c" <<W
#!/bin/sh
export SLURM_CONF=$R/etc/slurm.conf
me=\$(stat -L -c %i /proc/self/ns/net)
for ns in $NETNS; do
  [ "\$me" = "\$(stat -L -c %i /run/netns/\$ns 2>/dev/null)" ] && exec /usr/bin/$c "\$@"
done
exec nsenter --net=/run/netns/mpifl2-head /usr/bin/$c "\$@"
W
  chmod 755 "$R/bin/$c"
done

# ---- daemons: each in its own net + UTS + mount namespace ----
# private mount ns: our /etc/hosts bound over the real one, and (nodes) a private /dev/shm.
nsenter --net=/run/netns/mpifl2-head unshare --uts --mount --propagation private sh -c "
  mount --bind $R/etc/hosts /etc/hosts && hostname m2head &&
  exec /usr/sbin/slurmctld -f $R/etc/slurm.conf -i"
for n in n1 n2; do
  mkdir -p "$R/spool/$n" "$R/tmp/$n"; chmod 1777 "$R/tmp/$n"
  nsenter --net=/run/netns/mpifl2-$n unshare --uts --mount --propagation private sh -c "
    mount --bind $R/etc/hosts /etc/hosts && mount -t tmpfs -o size=1g,mode=1777 m2shm-$n /dev/shm &&
    hostname $n && exec /usr/sbin/slurmd -f $R/etc/slurm.conf -N $n"
done

for i in $(seq 120); do
  [ "$("$R/bin/sinfo" -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$')" = 2 ] && break
  sleep 0.25
done
"$R/bin/sinfo" -N
printf 'two-node cluster up in %.1f s; use: export PATH=%s/bin:$PATH\n' "$(awk "BEGIN{print $(date +%s.%N)-$t0}")" "$R"
[ "$("$R/bin/sinfo" -h -N -o '%t' | grep -c '^idle$')" = 2 ]
