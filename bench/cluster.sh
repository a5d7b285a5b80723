#!/usr/bin/env bash
# Shared-store benchmark (issue 13): ours on PostgreSQL (one instance, and two instances on one
# PostgreSQL), ours on SQLite, and sqlgrey 1.8 on the same PostgreSQL, 100 connections, the two
# 100-connection workloads of bench/load.sh (90% repeats of 10,000 prefilled triplets; every
# request a new triplet), every decision logged to a file (no -q). Prints one table.
#
#   bench/cluster.sh [--duration SEC] [--warmup SEC] [--rounds N] [--skip-sqlgrey] [--only SETUP,...] [--seeds same|per-host]
#
# --rounds N (default 1): every setup N times, round by round (x1, x2, x1, x2, ...), and the
# table shows each one's median and every run's req/s. This machine's speed drifts by a third
# within minutes; only figures taken in turn compare (the ratio of x2 to x1 above all).
# --warmup (default 8): load before the measured phase. Our Release build is JIT-compiled: for
# the first 5-9 s under load its tiered compiler still recompiles hot methods (a third of a core
# in the seconds 4-9 with two instances, nothing after 9 s), which a 2 s warm-up measured; the
# installed service (Native AOT, packaging/debian) compiles nothing at run time.
# --only: some of ours-sqlite, ours-pg, ours-pg-x2, sqlgrey-pg. --seeds: with repeats, whether
# the two hosts' generators share one seed (the default: one pool of senders, each triplet sent
# to both hosts in the same order at the same moments) or have one each (seed 1 and 2: each host
# its own pool of senders). With all-new triplets they always have one each.
#
# PostgreSQL is a private cluster made here (initdb in a temp dir, its own port and socket
# directory, run as the postgres user when started as root), durable as a production one:
# fsync and synchronous_commit on (the defaults). Nothing of the machine's cluster is used.
# Every server gets a fresh database; all talk to PostgreSQL over TCP on 127.0.0.1, as MX hosts
# talk to a shared database. The load goes over Unix sockets, as Postfix's policy service does.
#
# Needs: cc, make, the .NET SDK, python3, PostgreSQL's server (Debian: postgresql); sqlgrey and
# libdbd-pg-perl for the comparison.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# The generator sits beside the checkout (../shared), or beside the worktrees' directory.
tools=${POLICYLOAD_DIR:-$repo/../shared/tools/policyload}
[ -d "$tools" ] || tools=$repo/../../shared/tools/policyload
duration=10
warmup=8
rounds=1
with_sqlgrey=1
only=
seeds=same
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --skip-sqlgrey) with_sqlgrey=0; shift ;;
        --only) only=",$2,"; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        *) echo "usage: $0 [--duration SEC] [--warmup SEC] [--rounds N] [--skip-sqlgrey] [--only SETUP,...] [--seeds same|per-host]" >&2; exit 2 ;;
    esac
done
[ -x /usr/sbin/sqlgrey ] || { echo "no /usr/sbin/sqlgrey: running without it" >&2; with_sqlgrey=0; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL's server is missing: apt-get install postgresql" >&2; exit 1; }

work=$(mktemp -d /tmp/pgclbench.XXXXXX)
# The cluster's own directory: the postgres user must enter it, and not the rest of $work.
pgdir=$(mktemp -d /tmp/pgclbench-pg.XXXXXX)
pids=()
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -f "$pgdir/data/postmaster.pid" ] && as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

echo "building policyload and our service (Release)..." >&2
cp "$tools"/*.c "$tools"/Makefile "$work"/
make -s -C "$work" >/dev/null
dotnet build "$repo/src/Postgrey" -c Release -v quiet -nologo >/dev/null
ours_dll=${OURS_DLL:-$repo/src/Postgrey/bin/Release/net10.0/postgrey.dll}
run_as=(--user="$(id -un)")
load="$work/policyload"

# A free TCP port on 127.0.0.1 for the cluster.
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "initdb: private cluster on 127.0.0.1:$pgport in $pgdir" >&2
[ "$(id -u)" = 0 ] && chown postgres: "$pgdir"
as_postgres "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth-local=trust --auth-host=trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_postgres mkdir "$pgdir/sock"
cat >> "$pgdir/data/postgresql.conf" <<EOF
port = $pgport
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pgdir/sock'
max_connections = 200
EOF
as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w start >/dev/null
postmaster=$(head -1 "$pgdir/data/postmaster.pid")
psql() { as_postgres "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$pgdir/sock" -p "$pgport" -U postgres "$@"; }
db_uri() { echo "postgresql://postgres@127.0.0.1:$pgport/$1"; }

# CPU time (clock ticks) of the whole cluster: the postmaster, its live children (backends,
# writers) and the children it has reaped. Sampled every 0.2 s with the time, to read off the
# measured phase afterwards.
sample_pg_cpu() {
    python3 - "$postmaster" "$1" <<'PY' &
import os, sys, time
pm, out = int(sys.argv[1]), open(sys.argv[2], "w", buffering=1)
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()
while True:
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = stat(int(d))
        except OSError:
            continue
        if int(d) == pm:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
        elif int(f[1]) == pm:
            total += int(f[11]) + int(f[12])
    out.write(f"{time.time()} {total}\n")
    time.sleep(0.2)
PY
    sampler_pid=$!; pids+=("$sampler_pid")
    # Started before the load, and sampling, so that the measured phase lies within its samples.
    for _ in $(seq 600); do [ -s "$1" ] && return 0; sleep 0.05; done
    echo "the CPU sampler did not start" >&2; exit 1
}

# pg_cpu_between FILE START END -> CPU seconds of the cluster between two times (linear in between samples)
pg_cpu_between() {
    python3 - "$@" <<'PY'
import os, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
if not rows or rows[0][0] > float(sys.argv[2]):
    sys.exit("the CPU samples do not cover the measured phase")
def at(t):
    prev = rows[0]
    for r in rows:
        if r[0] >= t:
            if r[0] == prev[0]:
                return r[1]
            return prev[1] + (r[1] - prev[1]) * (t - prev[0]) / (r[0] - prev[0])
        prev = r
    return rows[-1][1]
print((at(float(sys.argv[3])) - at(float(sys.argv[2]))) / os.sysconf("SC_CLK_TCK"))
PY
}

# start_server SETUP INDEX -> $server_pid, socket $work/SETUP-INDEX.sock, log $work/SETUP-INDEX.log
start_server() {
    local setup=$1 index=$2 database=$3
    local sock="$work/$setup-$index.sock" log="$work/$setup-$index.log" dbdir="$work/dbdir-$setup-$index"
    rm -rf "$dbdir"; mkdir -p "$dbdir"
    case "$setup" in
        ours-sqlite)
            dotnet "$ours_dll" "${run_as[@]}" --unix="$sock" --dbdir="$dbdir" \
                --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$log" 2>&1 & ;;
        ours-pg|ours-pg-x2)
            dotnet "$ours_dll" "${run_as[@]}" --unix="$sock" --dbdir="$dbdir" --db="$(db_uri "$database")" \
                --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$log" 2>&1 & ;;
        sqlgrey-pg)
            # Its own config: PostgreSQL, the Unix socket, no whitelists (as ours), decisions
            # logged (loglevel 2) on stderr (not daemonized: Net::Server logs there).
            mkdir -p "$dbdir/conf"
            cat > "$dbdir/sqlgrey.conf" <<EOF
conf_dir = $dbdir/conf
loglevel = 2
user = $(id -un)
group = $(id -gn)
unix = $sock
pidfile = $dbdir/sqlgrey.pid
db_type = Pg
db_name = $database
db_host = 127.0.0.1
db_port = $pgport
db_user = postgres
db_pass =
db_cleandelay = 86400
EOF
            /usr/sbin/sqlgrey -f "$dbdir/sqlgrey.conf" >"$log" 2>&1 & ;;
    esac
    server_pid=$!; pids+=("$server_pid")
    for _ in $(seq 400); do
        if "$load" --unix "$sock" --requests 1 --quiet >/dev/null 2>&1; then return 0; fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "$setup did not start on $sock" >&2; cat "$log" >&2 || true; exit 1
}

stop_server() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(str(d.get(k,"")) for k in sys.argv[1:]))' "$@"; }

results="$work/results.tsv"
: > "$results"
n_db=0
# run WORKLOAD SETUP INSTANCES policyload-args... : 100 connections split over the instances.
run() {
    local workload=$1 setup=$2 instances=$3; shift 3
    n_db=$((n_db + 1))
    local database="bench$n_db" server_pids=() outs=() starts=()
    [ "$setup" = ours-sqlite ] || psql -c "CREATE DATABASE $database" >/dev/null
    rm -f "$work/pgcpu.txt"
    sample_pg_cpu "$work/pgcpu.txt"
    for i in $(seq "$instances"); do start_server "$setup" "$i" "$database"; server_pids+=("$server_pid"); done
    local conns=$((100 / instances)) lp=()
    for i in $(seq "$instances"); do
        # Each host its own mail: with all-new triplets, generator i has seed i (with one seed,
        # the second host would be sent the first one's triplets at the same moment: not new,
        # and a lock wait each). With repeats, one seed: the same pool of senders retries at both.
        local seed=1
        { [ "$workload" = "100c all new" ] || [ "$seeds" = per-host ]; } && seed=$i
        "$load" --unix "$work/$setup-$i.sock" --conns "$conns" --duration "$duration" --warmup "$warmup" --quiet \
            --server-pid "${server_pids[$((i - 1))]}" --seed "$seed" "$@" >"$work/out-$i.json" &
        lp+=($!)
    done
    for p in "${lp[@]}"; do wait "$p" || true; done
    local end; end=$(date +%s.%N)
    kill "$sampler_pid"; wait "$sampler_pid" 2>/dev/null || true
    for p in "${server_pids[@]}"; do stop_server "$p"; done
    local lines; lines=$(cat "$work/$setup"-*.log | wc -l)
    python3 - "$workload" "$setup" "$instances" "$end" "$lines" "$work"/out-*.json >>"$results" <<'PY'
import json, sys
workload, setup, instances, end, lines = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
outs = [json.load(open(f)) for f in sys.argv[6:6 + instances]]
rps = sum(o["rps"] for o in outs)
req = sum(o["requests"] for o in outs)
secs = max(o["seconds"] for o in outs)
# Percentiles of separate runs cannot be merged: the worse one stands for both.
p50 = max(o["p50_us"] for o in outs); p99 = max(o["p99_us"] for o in outs)
cpu = sum(o.get("server_cpu_s", 0) for o in outs)
err = sum(o["errors"] for o in outs)
print("\t".join(map(str, [workload, setup, instances, rps, p50, p99, cpu, req, err, end - secs, end, lines])))
PY
    # PostgreSQL's CPU over the measured phase (the last SECONDS before the generators ended).
    local row; row=$(tail -1 "$results")
    local t0 t1; t0=$(echo "$row" | cut -f10); t1=$(echo "$row" | cut -f11)
    local pgcpu=0
    [ "$setup" = ours-sqlite ] || pgcpu=$(pg_cpu_between "$work/pgcpu.txt" "$t0" "$t1")
    sed -i '$ s/$/\t'"$pgcpu"'/' "$results"
    rm -f "$work/$setup"-*.log "$work"/out-*.json
    printf '%-22s %-12s x%s %8.0f req/s  p99 %8.0f us  errors %s  (log lines %s, load %s)\n' "$workload" "$setup" "$instances" \
        "$(echo "$row" | cut -f4)" "$(echo "$row" | cut -f6)" "$(echo "$row" | cut -f9)" "$(echo "$row" | cut -f12)" "$(cut -d' ' -f1 /proc/loadavg)" >&2
}

setups=("ours-sqlite 1" "ours-pg 1" "ours-pg-x2 2")
[ "$with_sqlgrey" = 1 ] && setups+=("sqlgrey-pg 1")
for round in $(seq "$rounds"); do
    [ "$rounds" = 1 ] || echo "round $round of $rounds" >&2
    for s in "${setups[@]}"; do
        read -r setup instances <<<"$s"
        [ -z "$only" ] || [[ "$only" == *",$setup,"* ]] || continue
        run "100c 90% repeats" "$setup" "$instances" --triplets 10000 --mix 0.9 --prefill
        run "100c all new" "$setup" "$instances" --mix 0
    done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average before the last run: see above"
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), fsync and synchronous_commit on; ${duration}s per run after ${warmup}s warm-up, $rounds round(s); ours: $(dotnet "$ours_dll" --version)"
echo
python3 - "$results" <<'PY'
import sys, collections, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for w, s, n, rps, p50, p99, cpu, req, err, t0, t1, lines, pgcpu in rows:
    req = float(req)
    runs[w][s].append(dict(rps=float(rps), p50=float(p50), p99=float(p99), err=int(err),
                           cpu=float(cpu) / req * 1e6 if req else 0, pg=float(pgcpu) / req * 1e6 if req else 0))
# Several rounds: the median of each figure, the worst p99, the sum of errors, every run's req/s.
med = lambda rs, k: statistics.median(r[k] for r in rs)
names = {"ours-sqlite": "ours, SQLite", "ours-pg": "ours, PostgreSQL", "ours-pg-x2": "ours x2, one PostgreSQL", "sqlgrey-pg": "sqlgrey 1.8, PostgreSQL"}
print("| workload | server | req/s | p50 µs | p99 µs (worst) | service CPU µs/req | PostgreSQL CPU µs/req | errors | vs sqlgrey | x2 / x1 | req/s of each run |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for w, servers in runs.items():
    for s, rs in servers.items():
        rps = med(rs, "rps")
        ratio = f"{rps / med(servers['sqlgrey-pg'], 'rps'):.0f}x" if "sqlgrey-pg" in servers and s != "sqlgrey-pg" else ""
        scale = f"{rps / med(servers['ours-pg'], 'rps'):.0%}" if s == "ours-pg-x2" and "ours-pg" in servers else ""
        pg = "" if s == "ours-sqlite" else f"{med(rs, 'pg'):.0f}"
        each = " / ".join(f"{r['rps']:.0f}" for r in rs)
        print(f"| {w} | {names[s]} | {rps:.0f} | {med(rs, 'p50'):.0f} | {max(r['p99'] for r in rs):.0f} | {med(rs, 'cpu'):.0f} | {pg} | {sum(r['err'] for r in rs)} | {ratio} | {scale} | {each} |")
PY
