#!/usr/bin/env bash
# Where the service's CPU goes, by part: runs our Release build under one policyload workload,
# records 4 s of it with perf (call graphs, JIT frames named through the runtime's perf map), and
# prints the CPU of every thread of the service split into parts (read/send, SQLite, logging,
# engine, ...). Used for the breakdown in docs/performance.md.
#
#   bench/profile.sh [policyload args]     default: --conns 100 --triplets 10000 --mix 0.9 --prefill
#
# Needs: perf (Debian: linux-perf), cc, make, the .NET SDK, python3. Extra service flags: SERVER_ARGS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${POLICYLOAD_DIR:-$repo/../shared/tools/policyload}
[ -d "$tools" ] || tools=/work/shared/tools/policyload
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
[ $# -gt 0 ] || set -- --conns 100 --triplets 10000 --mix 0.9 --prefill

work=$(mktemp -d /tmp/pgprofile.XXXXXX)
server=
cleanup() { [ -z "$server" ] || kill -9 "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cp "$tools"/*.c "$tools"/Makefile "$work"/
make -s -C "$work" >/dev/null
dotnet build "$repo/src/Postgrey" -c Release -v quiet -nologo >/dev/null
ours_dll=${OURS_DLL:-$repo/src/Postgrey/bin/Release/net10.0/postgrey.dll}

# The perf map names JIT-compiled methods; with W^X on, JIT code runs from a second mapping
# that perf cannot match to the map.
DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
    dotnet "$ours_dll" --user="$(id -un)" --unix="$work/s.sock" --dbdir="$work/db" \
    --whitelist-clients=/dev/null --whitelist-recipients=/dev/null ${SERVER_ARGS:-} >"$work/log" 2>&1 &
server=$!
for _ in $(seq 200); do "$work/policyload" --unix "$work/s.sock" --requests 1 --quiet >/dev/null 2>&1 && break; sleep 0.05; done
"$work/policyload" --unix "$work/s.sock" --duration 8 --warmup 2 --quiet --server-pid "$server" "$@" >"$work/load.json" &
load=$!
sleep 5 # past the warm-up and the JIT's first tiers
perf record -F 2000 -g -p "$server" -o "$work/perf.data" -- sleep 4 >/dev/null 2>&1
wait "$load"
python3 - "$work/load.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{d['rps']:.0f} req/s, p50 {d['p50_us']:.0f} us, p99 {d['p99_us']:.0f} us, "
      f"server CPU {d['server_cpu_pct'] / 100 / d['rps'] * 1e6:.1f} us per request")
PY
perf script -i "$work/perf.data" -F comm,ip,sym 2>/dev/null | python3 "$here/profile-parts.py"
