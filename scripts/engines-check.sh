#!/usr/bin/env bash
# Runs an analysis spec through a real cluster engine and checks that its results are those of
# `modeconn run`, byte for byte (every model, curve and CSV file; training checkpoints record
# the paths of their inputs, which differ between the two output directories):
#
#   bash scripts/engines-check.sh snakemake   Snakemake from PyPI in a venv, `snakemake --cores 2`
#   bash scripts/engines-check.sh slurm       Debian's slurm-wlm: a one-node cluster (munged,
#                                             slurmctld, slurmd) on this machine; needs root and
#                                             apt, and stops the daemons at the end
#   bash scripts/engines-check.sh all         both
#
# The spec is analyses/digits-sweep.toml with its quick profile (SPEC and PROFILE override).
# Env: SNAKEMAKE_VENV (default .venv-snakemake), CARGO_TARGET_DIR, WORK (a scratch directory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENGINE="${1:-all}"
SPEC="${SPEC:-analyses/digits-sweep.toml}"
PROFILE="${PROFILE:-quick}"
SNAKEMAKE_PIN="snakemake==9.27.1"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"

cargo build --release -q
BIN="$(cd "${CARGO_TARGET_DIR:-$ROOT/target}" && pwd)/release/modeconn"

say() { printf 'engines-check: %s\n' "$*"; }

# The reference: the spec run in one process.
reference() {
    if [ ! -d "$WORK/direct" ]; then
        "$BIN" run "$SPEC" --profile "$PROFILE" --out "$WORK/direct" -q >/dev/null
    fi
}

# Every result file of the reference run has the same bytes in $1.
compare() {
    local other="$1" n=0 f
    while IFS= read -r f; do
        cmp -s "$WORK/direct/$f" "$other/$f" || { say "FAIL: $other/$f differs from modeconn run's"; exit 1; }
        n=$((n + 1))
    done < <(cd "$WORK/direct" && find . \( -name '*.safetensors' -o -name '*.csv' \) ! -name checkpoint.safetensors | sort)
    [ "$n" -gt 0 ] || { say "FAIL: no result files"; exit 1; }
    say "$n result files identical to modeconn run's ($other)"
}

check_snakemake() {
    local venv="${SNAKEMAKE_VENV:-$ROOT/.venv-snakemake}"
    if ! "$venv/bin/snakemake" --version >/dev/null 2>&1; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$SNAKEMAKE_PIN"
    fi
    say "snakemake $("$venv/bin/snakemake" --version)"
    reference
    local out="$WORK/snakemake"
    rm -rf "$out"
    "$BIN" run "$SPEC" --profile "$PROFILE" --out "$out" --export snakemake --jobs 2 >/dev/null
    local t0=$SECONDS
    "$venv/bin/snakemake" -s "$out/Snakefile" --cores 2 -d "$out" -q >"$WORK/snakemake.log" 2>&1 \
        || { cat "$WORK/snakemake.log"; say "FAIL: snakemake"; exit 1; }
    say "snakemake --cores 2 ran the Snakefile in $((SECONDS - t0)) s"
    compare "$out"
}

SLURM_PIDS=()
stop_slurm() {
    for p in "${SLURM_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
}

check_slurm() {
    [ "$(id -u)" = 0 ] || { say "FAIL: the SLURM check starts daemons and needs root"; exit 1; }
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    local host mem conf=/etc/slurm/slurm.conf
    host="$(hostname -s)"
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    cat >"$conf" <<EOF
ClusterName=modeconn-check
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    [ -f /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    trap stop_slurm EXIT
    if ! pgrep -x munged >/dev/null; then
        if id munge >/dev/null 2>&1; then
            su -s /bin/sh munge -c "munged" || munged --force
        else
            munged --force
        fi
    fi
    slurmctld -D >"$WORK/slurmctld.out" 2>&1 &
    SLURM_PIDS+=($!)
    slurmd -D >"$WORK/slurmd.out" 2>&1 &
    SLURM_PIDS+=($!)
    local i
    for i in $(seq 60); do
        sinfo -h -o '%T' 2>/dev/null | grep -qx idle && break
        sleep 1
    done
    sinfo -h -o '%T' | grep -qx idle || { sinfo; cat "$WORK/slurmd.out" /var/log/slurm/*.log | tail -20; say "FAIL: the node did not come up"; exit 1; }
    say "slurm $(sinfo -V) up: $(sinfo -h -o '%N %c CPUs %T')"
    reference
    local out="$WORK/slurm"
    rm -rf "$out"
    "$BIN" run "$SPEC" --profile "$PROFILE" --out "$out" --export slurm --threads 1 >/dev/null
    local t0=$SECONDS
    bash "$out/submit-slurm.sh"
    for i in $(seq 600); do
        [ -z "$(squeue -h)" ] && break
        sleep 1
    done
    [ -z "$(squeue -h)" ] || { squeue; say "FAIL: jobs still queued after 10 minutes"; exit 1; }
    local failed
    failed=$(sacct -n -X -o JobID,State 2>/dev/null | grep -v COMPLETED || true)
    local ids
    ids=$("$BIN" run "$SPEC" --profile "$PROFILE" --out "$out" --list | awk '{print $1}')
    for i in $ids; do
        [ -f "$out/$i/step.json" ] || { cat "$out"/slurm/*.log; echo "$failed"; say "FAIL: step $i has no marker"; exit 1; }
    done
    say "SLURM ran the $(echo "$ids" | wc -l) steps in $((SECONDS - t0)) s"
    compare "$out"
}

case "$ENGINE" in
    snakemake) check_snakemake ;;
    slurm) check_slurm ;;
    all) check_snakemake; check_slurm ;;
    *) echo "usage: $0 snakemake|slurm|all" >&2; exit 2 ;;
esac
