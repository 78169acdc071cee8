#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying `hydra/launcher=slurm_cpu` and for the
# tests marked `slurm` (CI starts it). Debian/Ubuntu, run as root (sudo), no systemd needed:
#
#   sudo scripts/slurm-dev-cluster.sh install   # apt-get the packages (once)
#   sudo scripts/slurm-dev-cluster.sh start     # munged, mariadbd, slurmdbd, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm-dev-cluster.sh status         # which daemons run (exit 1 if one does not), sinfo
#   sudo scripts/slurm-dev-cluster.sh stop      # ends the daemons it started, by their PID files
#
# start and stop are idempotent. Accounting (slurmdbd + MariaDB) is on because submitit asks
# sacct for a job's state: without it a cancelled or killed job leaves submitit waiting forever.
# MariaDB listens on its Unix socket only (--skip-networking); slurm's daemons authenticate with
# munge. Writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf (only ones it wrote itself:
# they start with the MARK line), logs in /var/log/slurm/. Daemons are stopped by their PID
# files, never by name, so other SLURM or MariaDB processes on the machine are left alone.
set -euo pipefail
umask 022

MARK="# written by lambda_hat scripts/slurm-dev-cluster.sh"
CLUSTER=${SLURM_DEV_CLUSTER:-lambdahat}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
RUN=/run/slurm
LOGS=/var/log/slurm
STATE=/var/lib/slurm
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
MARIADB_SOCK=/run/mysqld/mysqld.sock
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

say() { echo "slurm-dev-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (sudo $0 $1)"; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
ours() { [[ ! -e $1 ]] || head -n1 "$1" | grep -qxF "$MARK"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - t0 < limit )) || die "$what not ready after ${limit}s (logs: $LOGS/)"
    sleep 0.5
  done
}

install_packages() {
  need_root install
  if command -v slurmctld slurmd sbatch munged slurmdbd mariadbd >/dev/null 2>&1 && command -v sacct >/dev/null; then
    say "packages already installed"; return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_confs() {
  local host node
  host=$(hostname -s)
  ours "$CONF" || die "$CONF exists and was not written by this script; move it away first"
  ours "$DBD_CONF" || die "$DBD_CONF exists and was not written by this script; move it away first"
  # The node as slurmd sees it (CPUs, sockets, cores, memory); NodeAddr: no DNS needed.
  node=$(slurmd -C | head -n1)
  mkdir -p /etc/slurm
  cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  chmod 644 "$CONF"
  local pass
  if [[ -f $DBD_CONF ]]; then
    pass=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
  else
    pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  fi
  (umask 077; cat >"$DBD_CONF.tmp" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  )
  chown slurm:slurm "$DBD_CONF.tmp"
  chmod 600 "$DBD_CONF.tmp"
  mv "$DBD_CONF.tmp" "$DBD_CONF"
  DB_PASS=$pass
}

start() {
  need_root start
  command -v slurmctld >/dev/null || die "SLURM is not installed; run: sudo $0 install"
  if status >/dev/null 2>&1; then say "already running"; return; fi
  local t0=$SECONDS
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o slurm -g slurm -m 755 "$RUN" "$LOGS" "$STATE" "$STATE/slurmctld" "$STATE/slurmd"
  install -d -o mysql -g mysql -m 755 /run/mysqld
  write_confs

  if ! alive "$MUNGE_PID"; then
    [[ -f /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
  fi
  if ! alive "$MARIADB_PID"; then
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    # Unix socket only: nothing listens on the network.
    setsid mariadbd --user=mysql --skip-networking --socket="$MARIADB_SOCK" --pid-file="$MARIADB_PID" \
      --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 60 MariaDB mariadb --socket="$MARIADB_SOCK" -e "SELECT 1"
  fi
  mariadb --socket="$MARIADB_SOCK" <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  alive "$RUN/slurmdbd.pid" || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qxF "$CLUSTER" || sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null
  alive "$RUN/slurmctld.pid" || slurmctld
  alive "$RUN/slurmd.pid" || slurmd
  wait_for 60 "the node" bash -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'"
  say "up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
}

status() {
  local ok=0 name file
  for name in munged:$MUNGE_PID mariadbd:$MARIADB_PID slurmdbd:$RUN/slurmdbd.pid slurmctld:$RUN/slurmctld.pid slurmd:$RUN/slurmd.pid; do
    file=${name#*:}
    if alive "$file"; then echo "${name%%:*}: running (pid $(cat "$file"))"; else echo "${name%%:*}: not running"; ok=1; fi
  done
  if [[ $ok -eq 0 ]]; then sinfo 2>&1 || ok=1; fi
  return $ok
}

stop() {
  need_root stop
  local file pid
  for file in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid" "$MARIADB_PID" "$MUNGE_PID"; do
    if alive "$file"; then
      pid=$(cat "$file")
      kill "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && { say "pid $pid ($file) ignored SIGTERM for 30 s; sending SIGKILL"; kill -9 "$pid"; }
    fi
    rm -f "$file"
  done
  say "stopped"
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
