#!/usr/bin/env bash
# Start-up and idle memory, side by side in one run: the packaged binary (Native AOT, from
# the .deb that packaging/debian/build.sh makes), the JIT build (`dotnet postgrey.dll`,
# Release) and, if installed, the real postgrey 1.37. Each is started RUNS times on an empty
# dbdir as root (so each binds, opens its database and drops to the postgrey user, as
# postgrey does) and timed from the fork to the first answer on its Unix socket; then its
# resident memory is read after 2 s idle. Prints one table.
#
#   bench/startup.sh [RUNS]        (default 10; needs root, python3 and the postgrey user)
set -euo pipefail
runs=${1:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgstart.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
getent passwd postgrey >/dev/null || { echo "startup.sh: needs the postgrey user (apt-get install postgrey, or the .deb)" >&2; exit 1; }

echo "building the package and the JIT build..." >&2
deb=$(OUT="$work" bash "$repo/packaging/debian/build.sh" 2>/dev/null | tail -1)
dpkg-deb -x "$deb" "$work/pkg"
dotnet build "$repo/src/Postgrey" -c Release -v quiet -nologo >/dev/null
printf '# none\n' > "$work/clients"
printf 'postmaster@\n' > "$work/recipients"
chmod 644 "$work/clients" "$work/recipients"

measure() { # NAME RUNS CMD...: prints "NAME median min max rss"
    python3 - "$work" "$@" <<'PY'
import os, socket, statistics, subprocess, sys, time, shutil, pwd
work, name, runs, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
pg = pwd.getpwnam("postgrey")
request = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n"
           b"client_name=mx.example.net\nsender=a@example.net\nrecipient=b@example.org\n\n")
times, rss = [], []
for i in range(runs):
    run = os.path.join(work, f"run{os.getpid()}-{i}")  # no spaces: Net::Server splits on them
    os.makedirs(run); os.chmod(run, 0o777)
    db = os.path.join(run, "db"); os.makedirs(db); os.chown(db, pg.pw_uid, pg.pw_gid)
    sock = os.path.join(run, "s")
    argv = [a.replace("{SOCK}", sock).replace("{DB}", db) for a in cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answer = None
    while answer is None:
        if p.poll() is not None:
            sys.exit(f"{name}: exited with {p.returncode}")
        try:
            c = socket.socket(socket.AF_UNIX); c.connect(sock)
            c.sendall(request); answer = c.recv(4096); c.close()
        except OSError:
            time.sleep(0.0005)
    times.append((time.perf_counter() - t0) * 1000)
    time.sleep(2)
    with open(f"/proc/{p.pid}/status") as f:
        rss.append(next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024)
    p.kill(); p.wait()
    shutil.rmtree(run, ignore_errors=True)
print(f"{name}\t{statistics.median(times):.0f}\t{min(times):.0f}\t{max(times):.0f}\t{statistics.median(rss):.1f}")
PY
}

common=(--unix={SOCK} --dbdir={DB} --whitelist-clients="$work/clients" --whitelist-recipients="$work/recipients")
{
    echo -e "server\tmedian ms\tmin ms\tmax ms\tidle RSS MiB"
    measure "ours (packaged, Native AOT)" "$runs" "$work/pkg/usr/lib/postgrey/postgrey" "${common[@]}"
    measure "ours (JIT, dotnet postgrey.dll)" "$runs" dotnet "$repo/src/Postgrey/bin/Release/net10.0/postgrey.dll" "${common[@]}"
    if [ -x /usr/sbin/postgrey ]; then
        measure "postgrey 1.37" "$runs" /usr/sbin/postgrey "${common[@]}"
    fi
} | column -t -s $'\t'
