#!/usr/bin/env bash
# Installs the package on this machine and checks it as an admin would use it: the units
# verify, the installed binary serves a socket as the postgrey user (started as postgrey,
# as the unit does, and started as root with -d, dropping to postgrey), then remove and purge
# leave nothing behind. Usage: ci-test.sh PATH.deb. Needs root; replaces Debian's postgrey.
set -euo pipefail
deb=$1
export DEBIAN_FRONTEND=noninteractive
fail() { echo "package test: FAILED: $*" >&2; exit 1; }
step() { echo "package test: $*"; }

if ! command -v systemd-analyze >/dev/null; then
    apt-get install -y -qq systemd >/dev/null
fi
# A run that stopped half-way left ours installed: start from nothing, so that its
# /etc/postgrey files install afresh.
if dpkg-query -W -f='${Status}' postgrey-dotnet 2>/dev/null | grep -qE " (installed|config-files)$"; then
    dpkg --purge postgrey-dotnet >/dev/null
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
ask() {
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\nclient_name=mx.example.net\nsender=a@example.net\nrecipient=%s\n\n' "$2" >&3
    IFS= read -r -t 10 answer <&3 || true
    exec 3>&-
    echo "$answer"
}
# A site that switches: Debian's postgrey greylisted a triplet and passed its retry; the
# BerkeleyDB files it wrote are what our postinst must import, so that the retry's triplet
# passes at once on ours. (A real swap removes Debian's package and keeps /var/lib/postgrey;
# this test purges it, for a clean start, so it keeps a copy of the files.)
if ! dpkg-query -W -f='${Status}' postgrey 2>/dev/null | grep -q "install ok installed"; then
    apt-get install -y -qq postgrey >/dev/null
fi
# Stopped through its service or its init script's pid file, never by name.
service postgrey stop >/dev/null 2>&1 || true
if [ -s /run/postgrey.pid ]; then kill "$(cat /run/postgrey.pid)" 2>/dev/null || true; fi
step "Debian's postgrey: greylists a triplet, then passes its retry"
rm -f /var/lib/postgrey/postgrey.db /var/lib/postgrey/postgrey_clients.db
p=$(port)
/usr/sbin/postgrey --inet="127.0.0.1:$p" --delay=1 -d --pidfile=/run/postgrey-deb.pid
wait_port "$p" || fail "Debian's postgrey: not listening"
[ "$(ask "$p" swap@example.org)" = 'action=DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/example.org.html' ] \
    || fail "Debian's postgrey did not greylist"
sleep 2
case "$(ask "$p" swap@example.org)" in
    "action=PREPEND X-Greylist:"*) ;;
    *) fail "Debian's postgrey did not pass the retry" ;;
esac
debpid=$(cat /run/postgrey-deb.pid)
kill -TERM "$debpid"
for _ in $(seq 1 100); do [ -d "/proc/$debpid" ] || break; sleep 0.1; done
[ ! -d "/proc/$debpid" ] || fail "Debian's postgrey did not stop"
kept=$(mktemp -d)
cp -p /var/lib/postgrey/*.db "$kept/"
# The package Conflicts with Debian's postgrey (same unit, same /etc/default/postgrey).
# Its postgrey user stays, as it does on a site that switches: it owns the files to import.
apt-get purge -y -qq postgrey >/dev/null
command -v db_load >/dev/null || apt-get install -y -qq db-util >/dev/null
install -d -m 0700 /var/lib/postgrey
cp -p "$kept"/*.db /var/lib/postgrey/
rm -rf "$kept"

step "dpkg -i $(basename "$deb")"
dpkglog=$(mktemp)
dpkg -i "$deb" | tee "$dpkglog"
grep -q '^postgrey: import from postgrey.db: imported 1 triplets, [0-9]* clients; skipped 0; rejected 0$' "$dpkglog" || fail "postinst did not import postgrey.db"
[ -f /var/lib/postgrey/postgrey.db ] || fail "postinst removed postgrey.db"
/usr/sbin/postgrey export --dbdir=/var/lib/postgrey | grep -qx ' 192.0.2.0/a@example.net/swap@example.org' || fail "imported triplet not in the database"
getent passwd postgrey >/dev/null || fail "no postgrey user"
[ "$(stat -c '%U:%G %a' /var/lib/postgrey)" = "postgrey:postgrey 700" ] || fail "/var/lib/postgrey: $(stat -c '%U:%G %a' /var/lib/postgrey)"
/usr/sbin/postgrey --version | grep -q '^postgrey 1.37 (Postgrey for .NET ' || fail "--version"
man=/usr/share/man/man8/postgrey.8.gz
[ -f "$man" ] || fail "no man page at $man"
manwarn=$(zcat "$man" | groff -man -z -ww 2>&1) || fail "groff failed on $man"
[ -z "$manwarn" ] || fail "groff warns on $man: $manwarn"
lexgrog "$man" | grep -q 'postgrey - Postfix greylisting policy server' || fail "$man: no NAME line for whatis"
/usr/sbin/postgrey check-whitelists >/dev/null || fail "check-whitelists on the installed whitelists"
for f in /etc/default/postgrey /etc/postgrey/whitelist_clients /etc/postgrey/whitelist_recipients; do
    dpkg-query --showformat='${Conffiles}\n' --show postgrey-dotnet | grep -q " $f " || fail "$f is not a conffile"
done

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/postgrey.service /lib/systemd/system/postgrey.socket
systemd-analyze security --offline=true /lib/systemd/system/postgrey.service | tail -1

expected='action=DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/example.org.html'
uid=$(id -u postgrey)

step "run as postgrey (as the unit does) on a TCP socket"
p=$(port)
log=$(mktemp)
setpriv --reuid=postgrey --regid=postgrey --init-groups -- /usr/sbin/postgrey --inet="127.0.0.1:$p" --dbdir=/var/lib/postgrey --delay=1 >"$log" 2>&1 &
pid=$!
wait_port "$p" || { cat "$log"; fail "not listening"; }
# The swap delays no one: the triplet that passed on Debian's postgrey passes at once here.
case "$(ask "$p" swap@example.org)" in
    action=DUNNO|"action=PREPEND X-Greylist:"*) ;;
    *) cat "$log"; fail "the triplet imported from Debian's postgrey was greylisted again" ;;
esac
[ "$(ask "$p" b@example.org)" = "$expected" ] || { cat "$log"; fail "wrong answer"; }
[ "$(ask "$p" postmaster@example.org)" = "action=DUNNO" ] || fail "the default recipient whitelist (/etc/postgrey) is not read"
kill -TERM "$pid"; wait "$pid" || fail "exit code $? after SIGTERM"
grep -q '^action=greylist, reason=new, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org$' "$log" || { cat "$log"; fail "no decision line"; }
[ "$(stat -c %U /var/lib/postgrey/postgrey.sqlite3)" = postgrey ] || fail "database not owned by postgrey"

step "run as root with -d and --pidfile: drops to postgrey"
p=$(port)
/usr/sbin/postgrey -d --pidfile=/run/postgrey-ci.pid --inet="127.0.0.1:$p" --dbdir=/var/lib/postgrey || fail "-d exit $?"
pid=$(cat /run/postgrey-ci.pid)
wait_port "$p" || fail "daemon not listening"
grep -q "^Uid:[[:space:]]*$uid[[:space:]]" "/proc/$pid/status" || fail "daemon not running as postgrey: $(grep Uid "/proc/$pid/status")"
[ "$(ask "$p" b@example.org)" = "$expected" ] || fail "daemon: wrong answer"
kill -TERM "$pid"
for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
[ ! -d "/proc/$pid" ] || fail "daemon did not stop"
rm -f /run/postgrey-ci.pid

step "--lookup-by-identity: the installed (Native AOT) binary checks SPF"
# Two clients in different /16s, both authorised by the sender's SPF record: one triplet, keyed
# by the sender's domain. ARSoft.Tools.Net's SPF parser needs enum arrays that Native AOT
# keeps only when told (src/Postgrey.Identity/SpfCheck.cs); this catches their loss.
dns=$(port)
python3 "$(dirname "$0")/ci-dns.py" "$dns" pool.test 'v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all' &
dnspid=$!
p=$(port)
log=$(mktemp)
iddb=$(mktemp -d)
chown postgrey "$iddb"
setpriv --reuid=postgrey --regid=postgrey --init-groups -- /usr/sbin/postgrey --inet="127.0.0.1:$p" --dbdir="$iddb" \
    --lookup-by-identity --dns-server="127.0.0.1:$dns" >"$log" 2>&1 &
pid=$!
wait_port "$p" || { cat "$log"; fail "identity mode: not listening"; }
for client in 198.51.100.7 203.0.113.9; do
    exec 3<>"/dev/tcp/127.0.0.1/$p"
    printf 'request=smtpd_access_policy\nclient_address=%s\nclient_name=unknown\nsender=a@pool.test\nrecipient=b@example.org\n\n' "$client" >&3
    IFS= read -r -t 10 answer <&3 || true
    exec 3>&-
done
kill -TERM "$pid"; wait "$pid" || true
kill "$dnspid"; wait "$dnspid" 2>/dev/null || true
for client in 198.51.100.7 203.0.113.9; do
    grep -q "client_address=$client, sender=a@pool.test, recipient=b@example.org, key=spf:pool.test\$" "$log" \
        || { cat "$log"; fail "identity mode: $client not keyed by SPF"; }
done
rm -rf "$iddb"

step "dpkg -r, then dpkg -P"
dpkg -r postgrey-dotnet >/dev/null
[ ! -e /usr/sbin/postgrey ] || fail "binary left after remove"
[ -f /etc/default/postgrey ] || fail "conffile removed by remove (only purge may)"
dpkg -P postgrey-dotnet >/dev/null
for path in /etc/default/postgrey /etc/postgrey /var/lib/postgrey /usr/lib/postgrey /lib/systemd/system/postgrey.service; do
    [ ! -e "$path" ] || fail "$path left after purge"
done
! getent passwd postgrey >/dev/null || fail "user postgrey left after purge"
step "passed"
