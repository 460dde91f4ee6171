#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (run as root; idempotent).
#
# Installs Debian's slurm-wlm and munge if missing, writes /etc/slurm/slurm.conf for this host (its real name and
# `slurmd -C` CPUs/memory), starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle.
# Exit 0: the cluster is up. Exit 2: it cannot be set up here (not root, no apt, no network); the reason is printed
# and the SLURM test then skips. Set SLURM_UP_NO_INSTALL=1 to never call apt-get.
#
# Settings that make a requeue fast (a requeued job waits for them before it starts again):
#   AuthInfo=cred_expire=5    a requeued job must wait cred_expire seconds (default 120) before it is started again
#   SchedulerParameters=sched_interval=2   the main scheduling loop (default every 60 s) notices that wait is over
#   KillWait=5               SIGTERM -> SIGKILL grace for a killed/requeued job (default 30 s)
#   MinJobAge=300            finished jobs stay visible to squeue/scontrol long enough for the test to read them
set -uo pipefail

say() { echo "slurm_up: $*"; }
give_up() { say "$*"; exit 2; }

[ "$(id -u)" = 0 ] || give_up "not root: cannot install or start slurmctld/slurmd"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  [ "${SLURM_UP_NO_INSTALL:-0}" = 1 ] && give_up "slurm-wlm/munge not installed (SLURM_UP_NO_INSTALL=1)"
  command -v apt-get >/dev/null || give_up "slurm-wlm/munge not installed and no apt-get here"
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/tmp/slurm_up_apt.log 2>&1 || give_up "apt-get update failed (offline?): see /tmp/slurm_up_apt.log"
  timeout 600 apt-get install -y -q slurm-wlm munge >>/tmp/slurm_up_apt.log 2>&1 \
    || give_up "apt-get install slurm-wlm munge failed: see /tmp/slurm_up_apt.log"
fi

HOST=$(hostname -s)
if sinfo -h -n "$HOST" -o %t 2>/dev/null | grep -qx idle; then
  say "already up: node $HOST idle"
  exit 0
fi

# --- munge (authentication between the daemons and the clients) ---
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force || give_up "munged did not start"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null 2>&1 || give_up "munge does not authenticate"

# --- slurm.conf from this machine's real values ---
NODE_LINE=$(slurmd -C | head -1)   # NodeName=<host> CPUs=... Boards=... SocketsPerBoard=... RealMemory=...
[[ "$NODE_LINE" == NodeName=* ]] || give_up "slurmd -C gave no node line"
NODE_LINE=$(echo "$NODE_LINE" | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<EOF
# written by musclelab .ci/slurm_up.sh: one node, no accounting
ClusterName=musclelab
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
JobRequeue=1
KillWait=5
MinJobAge=300
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons (restart with this config) ---
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
done
/usr/sbin/slurmctld -c || give_up "slurmctld did not start: see /var/log/slurm/slurmctld.log"
/usr/sbin/slurmd || give_up "slurmd did not start: see /var/log/slurm/slurmd.log"
for _ in $(seq 120); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null)
  [ "$state" = idle ] && { say "up: node $HOST idle ($(echo "$NODE_LINE" | grep -o 'CPUs=[0-9]*'))"; exit 0; }
  case "$state" in down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null ;; esac
  sleep 0.5
done
give_up "node $HOST not idle after 60 s (state: ${state:-none}); see /var/log/slurm/"
