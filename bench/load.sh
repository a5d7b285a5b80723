#!/usr/bin/env bash
# Load benchmark: nullpolicy (the protocol floor), our service and, if installed, the real
# postgrey, under the same workloads, one after the other on this machine, with
# ../shared/tools/policyload. Prints one table and the ratios. About 6-8 minutes.
#
#   bench/load.sh [--duration SEC] [--skip-postgrey] [--skip-bigdb]
#
# Needs: cc, make, the .NET SDK, python3 (to fill the big database); postgrey is optional.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${POLICYLOAD_DIR:-$repo/../shared/tools/policyload}
[ -d "$tools" ] || tools=/work/shared/tools/policyload
duration=10
with_postgrey=1
with_bigdb=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --skip-postgrey) with_postgrey=0; shift ;;
        --skip-bigdb) with_bigdb=0; shift ;;
        *) echo "usage: $0 [--duration SEC] [--skip-postgrey] [--skip-bigdb]" >&2; exit 2 ;;
    esac
done
[ -x /usr/sbin/postgrey ] || with_postgrey=0

work=$(mktemp -d /tmp/pgbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "building policyload and our service (Release)..." >&2
cp "$tools"/*.c "$tools"/Makefile "$work"/
make -s -C "$work" >/dev/null
dotnet build "$repo/src/Postgrey" -c Release -v quiet -nologo >/dev/null
# OURS_DLL=path compares another build (e.g. a worktree of an older commit).
ours_dll=${OURS_DLL:-$repo/src/Postgrey/bin/Release/net10.0/postgrey.dll}
# Started as root it would switch to the postgrey user, who cannot enter this private work dir.
run_as=(--user="$(id -un)")
load="$work/policyload"

# start_server NAME KIND(unix|inet) ADDRESS -> sets $server_pid, waits until it answers
start_server() {
    local name=$1 kind=$2 address=$3 db="$work/db-$1-$2"
    rm -rf "$db"; mkdir -p "$db"
    case "$name" in
        nullpolicy)
            "$work/nullpolicy" --$kind "$address" --quiet & ;;
        ours)
            # Not -q: every decision is logged (to the file), as an installed service does.
            dotnet "$ours_dll" "${run_as[@]}" --$kind="$address" --dbdir="$db" --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$db.log" 2>&1 & ;;
        ours-metrics)
            # --metrics on and scraped every second throughout (SERVERS="ours ours-metrics": the cost of issue 16).
            local mport=$((20000 + RANDOM % 20000))
            dotnet "$ours_dll" "${run_as[@]}" --$kind="$address" --dbdir="$db" --metrics=127.0.0.1:$mport --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$db.log" 2>&1 &
            server_pid=$!
            (while kill -0 "$server_pid" 2>/dev/null; do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics" || true; sleep 1; done) &
            pids+=("$!") ;;
        postgrey)
            chown postgrey "$db" "$work" 2>/dev/null || true
            /usr/sbin/postgrey --$kind="$address" --dbdir="$db" --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$db.log" 2>&1 & ;;
    esac
    [ "$name" = ours-metrics ] || server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 200); do
        if "$load" --$kind "$address" --requests 1 --quiet >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "$name did not start on $address" >&2; cat "$db.log" >&2 || true; exit 1
}

# SIGTERM, then SIGKILL after 5 s (postgrey's Net::Server::Multiplex does not always exit on TERM).
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

# utime+stime ticks of each thread of PID: "tid name ticks" lines.
thread_ticks() {
    python3 - "$1" <<'PY' 2>/dev/null || true
import os, sys
d = f"/proc/{sys.argv[1]}/task"
for tid in os.listdir(d):
    try:
        s = open(f"{d}/{tid}/stat").read()
    except OSError:
        continue
    name = s[s.index("(") + 1:s.rindex(")")].replace(" ", "_")
    f = s[s.rindex(")") + 2:].split()
    print(tid, name, int(f[11]) + int(f[12]))
PY
}

# The busiest threads since thread_ticks' snapshot, as a share of one core.
thread_shares() {
    local pid=$1 before=$2 secs=$((duration + 2))
    python3 - "$secs" "$(getconf CLK_TCK)" <(echo "$before") <(thread_ticks "$pid") <<'PY' 2>/dev/null || true
import sys, collections
secs, hz = float(sys.argv[1]), float(sys.argv[2])
def load(p):
    return {l.split()[0]: (l.split()[1], int(l.split()[2])) for l in open(p) if len(l.split()) == 3}
before, after = load(sys.argv[3]), load(sys.argv[4])
by = collections.Counter()
for tid, (name, ticks) in after.items():
    by[name] += ticks - before.get(tid, (name, 0))[1]
print(", ".join(f"{n} {t / hz / secs:.0%}" for n, t in by.most_common(5) if t > 0))
PY
}

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(str(d.get(k,"")) for k in sys.argv[1:]))' "$@"; }

results="$work/results.tsv"
: > "$results"
# run WORKLOAD SERVER KIND ADDRESS policyload-args...
run() {
    local workload=$1 name=$2 kind=$3 address=$4; shift 4
    start_server "$name" "$kind" "$address"
    local out threads_before
    threads_before=$(thread_ticks "$server_pid")
    out=$("$load" --$kind "$address" --duration "$duration" --warmup 2 --quiet --server-pid "$server_pid" "$@")
    local threads
    threads=$(thread_shares "$server_pid" "$threads_before")
    stop_server
    read -r rps p50 p99 cpu rss errors <<<"$(echo "$out" | json rps p50_us p99_us server_cpu_pct server_hwm_kb errors)"
    # Server CPU per request (µs): the figure that does not depend on the cores the machine has.
    local us
    us=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / 100 / float(sys.argv[2]) * 1e6:.1f}')" "$cpu" "$rps")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$name" "$rps" "$p50" "$p99" "$cpu" "$rss" "$errors" "$us" >> "$results"
    printf '%-34s %-10s %10.0f req/s  p50 %8.0f us  p99 %8.0f us  cpu %5.0f%%  %6s us/req  rss %6d KiB  errors %s\n' "$workload" "$name" "$rps" "$p50" "$p99" "$cpu" "$us" "$rss" "$errors" >&2
    [ -z "$threads" ] || echo "    per thread (warm-up included): $threads" >&2
}

servers=(${SERVERS:-nullpolicy ours})
if [ "$with_postgrey" = 1 ] && [ -z "${SERVERS:-}" ]; then servers+=(postgrey); fi
for s in "${servers[@]}"; do
    run "unix 100c 90% repeats" "$s" unix "$work/$s.sock" --conns 100 --triplets 10000 --mix 0.9 --prefill
    run "unix 100c all new" "$s" unix "$work/$s.sock" --conns 100 --mix 0
    run "unix 1c 90% repeats" "$s" unix "$work/$s.sock" --conns 1 --triplets 10000 --mix 0.9 --prefill
    run "tcp 100c 90% repeats" "$s" inet "127.0.0.1:$((20000 + RANDOM % 20000))" --conns 100 --triplets 10000 --mix 0.9 --prefill
    run "tcp 100c all new" "$s" inet "127.0.0.1:$((20000 + RANDOM % 20000))" --conns 100 --mix 0
    run "tcp 1c 90% repeats" "$s" inet "127.0.0.1:$((20000 + RANDOM % 20000))" --conns 1 --triplets 10000 --mix 0.9 --prefill
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "duration ${duration}s per run after 2s warm-up; ours: $(dotnet "$ours_dll" --version)"
echo
python3 - "$results" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for w, s, rps, p50, p99, cpu, rss, err, us in rows:
    by[w][s] = dict(rps=float(rps), p50=float(p50), p99=float(p99), cpu=float(cpu), rss=int(rss), err=err, us=float(us))
print("| workload | server | req/s | p50 µs | p99 µs | server CPU | CPU µs/req | server RSS | errors | ours / nullpolicy | ours / postgrey |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w, servers in by.items():
    for s, r in servers.items():
        ratio_null = ratio_pg = ""
        if s == "ours":
            if "nullpolicy" in servers:
                n = servers["nullpolicy"]
                ratio_null = f"{r['rps']/n['rps']:.0%} of throughput" if "1c" not in w else f"p50 {r['p50']/n['p50']:.1f}x"
            if "postgrey" in servers:
                ratio_pg = f"{r['rps']/servers['postgrey']['rps']:.0f}x"
        print(f"| {w} | {s} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['cpu']:.0f}% | {r['us']:.1f} | {r['rss']/1024:.0f} MiB | {r['err']} | {ratio_null} | {ratio_pg} |")
PY

if [ "$with_bigdb" = 1 ]; then
    echo
    echo "big database: 1,000,000 triplets (half expired) and 100,000 auto-whitelisted clients" >&2
    db="$work/db-big"; mkdir -p "$db"
    # The schema comes from our own start-up; python3 fills it in one transaction.
    dotnet "$ours_dll" "${run_as[@]}" -q --unix="$work/big.sock" --dbdir="$db" --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >/dev/null 2>&1 &
    server_pid=$!; pids+=("$server_pid")
    for _ in $(seq 200); do [ -S "$work/big.sock" ] && break; sleep 0.05; done
    stop_server
    python3 - "$db/postgrey.sqlite3" <<'PY'
import sqlite3, sys, time
now = int(time.time()); day = 86400
c = sqlite3.connect(sys.argv[1])
c.execute("BEGIN")
c.executemany("INSERT INTO triplets VALUES (?,?,?)",
    ((f"198.{i % 250}.{(i // 250) % 250}.0/user{i}@sender{i % 977}.example/rcpt{i % 5003}@dest.example",
      now - 50 * day if i % 2 else now - 2 * day,
      now - 40 * day if i % 2 else now - day) for i in range(1_000_000)))
c.executemany("INSERT INTO clients VALUES (?,?,?)",
    ((f"203.{i % 250}.{i // 250 % 250}.{i % 7}", 9, now - day) for i in range(100_000)))
c.execute("COMMIT"); c.close()
PY
    start=$(date +%s%N)
    dotnet "$ours_dll" "${run_as[@]}" --unix="$work/big.sock" --dbdir="$db" --maintenance-interval=8 --whitelist-clients=/dev/null --whitelist-recipients=/dev/null >"$db.log" 2>&1 &
    server_pid=$!; pids+=("$server_pid")
    until "$load" --unix "$work/big.sock" --requests 1 --quiet >/dev/null 2>&1; do sleep 0.01; done
    first=$(( ($(date +%s%N) - start) / 1000000 ))
    idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$server_pid/status)
    out=$("$load" --unix "$work/big.sock" --conns 100 --triplets 10000 --mix 0.9 --duration 20 --quiet --server-pid "$server_pid")
    read -r rps p50 p99 hwm <<<"$(echo "$out" | json rps p50_us p99_us server_hwm_kb)"
    stop_server
    sweep=$(grep -m1 'cleaning main database finished' "$db.log" || echo "no sweep logged")
    echo "| big database | value |"
    echo "|---|---|"
    echo "| start to first answer | ${first} ms |"
    echo "| RSS after start | $((idle_rss / 1024)) MiB |"
    echo "| load during the sweep (100c, 90% repeats, 20 s) | ${rps%.*} req/s, p50 ${p50%.*} µs, p99 ${p99%.*} µs |"
    echo "| peak RSS under load and sweep | $((hwm / 1024)) MiB |"
    echo "| sweep | $sweep |"
fi
