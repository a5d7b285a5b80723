#!/usr/bin/env python3
"""Pool-sender simulation for --lookup-by-identity (results: docs/pool-aware.md).

Replays, with policy_test_time, mail from pool senders that retry from k of n addresses
spread over several /16s (SPF-authorised, verified names) on Postfix's retry schedule, mixed
with one-shot spam from random addresses (some with forged big-provider senders that fail
SPF), against: Debian's postgrey 1.37, ours by default, ours with --lookup-by-identity. A small
DNS server on 127.0.0.1 (in this script) serves the providers' SPF records. Everything stays
on loopback; the run is bounded (a fixed number of messages).

usage: bench/pool-sim.py [--messages N] [--spam N] [--seed S]
Needs: /usr/sbin/postgrey (Debian's postgrey), the built src/Postgrey (dotnet build src/Postgrey).
"""
import argparse, os, random, shutil, socket, statistics, struct, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "src/Postgrey/bin/Debug/net10.0/postgrey.dll")
DELAY = 300

# Postfix: the first retry after minimal_backoff_time (300 s), then doubling up to
# maximal_backoff_time (4000 s), each seen at the next queue run (queue_run_delay 300 s).
def postfix_attempts(start, rng, horizon=5 * 86400):
    t, backoff, times = start, 300, [start]
    while t - start < horizon:
        t += backoff + rng.uniform(0, 300)
        times.append(t)
        backoff = min(backoff * 2, 4000)
    return times

# ---- a minimal authoritative DNS server: TXT for the providers' SPF, NXDOMAIN otherwise ----
def dns_name(data, off):
    labels = []
    while data[off]:
        n = data[off]; labels.append(data[off + 1:off + 1 + n].decode()); off += n + 1
    return ".".join(labels).lower(), off + 1

def dns_server(sock, txt):
    while True:
        try:
            data, peer = sock.recvfrom(4096)
        except OSError:
            return
        qid, flags = struct.unpack(">HH", data[:4])
        name, off = dns_name(data, 12)
        qtype = struct.unpack(">H", data[off:off + 2])[0]
        question = data[12:off + 4]
        answers = b""
        rcode, count = 3, 0
        if name in txt:
            rcode = 0
            if qtype == 16:
                s = txt[name].encode()
                rdata = b"".join(bytes([len(s[i:i + 255])]) + s[i:i + 255] for i in range(0, len(s), 255))
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 300, len(rdata)) + rdata
                count = 1
        header = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, count, 0, 0)
        sock.sendto(header + question + answers, peer)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def ask(port, client, name, sender, rcpt, now):
    req = (f"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n"
           f"client_name={name}\nsender={sender}\nrecipient={rcpt}\npolicy_test_time={int(now)}\n\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(req.encode()); buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk: break
            buf += chunk
    return buf.decode().split("\n")[0]

def wait_port(port, proc, seconds=60):
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None: sys.exit(f"server exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError: time.sleep(0.2)
    sys.exit(f"server did not listen: {proc.args}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--spam", type=int, default=400)
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    rng = random.Random(a.seed)

    # Five providers, each 12 outbound hosts over 4 /16s; SPF lists the /24s.
    providers, txt = [], {}
    for p in range(5):
        domain = f"provider{p}.test"
        nets = [f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}" for _ in range(4)]
        hosts = [(f"{nets[i % 4]}.{rng.randint(1, 254)}", f"out-{i}.mail.{domain}") for i in range(12)]
        txt[domain] = "v=spf1 " + " ".join(f"ip4:{n}.0/24" for n in nets) + " -all"
        providers.append((domain, hosts))

    events = []  # (time, kind, message id, client, name, sender, rcpt)
    t0 = 1_800_000_000
    for m in range(a.messages):
        domain, hosts = providers[m % len(providers)]
        start = t0 + rng.uniform(0, 86400)
        k = rng.randint(2, len(hosts))  # this message's retries come from k of the n hosts
        used = rng.sample(hosts, k)
        for at in postfix_attempts(start, rng):
            client, name = rng.choice(used)
            # One message, one recipient of its own: no triplet is shared between messages.
            events.append((at, "pool", m, client, name, f"newsletter@{domain}", f"user{m}@example.org"))
    for s in range(a.spam):
        client = f"{rng.randint(100, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        forged = s % 3 == 0  # a third claim a big provider's domain, failing its SPF
        sender = f"x{s}@{providers[s % 5][0]}" if forged else f"x{s}@spam{s}.invalid"
        events.append((t0 + rng.uniform(0, 86400), "spam", s, client, "unknown", sender, f"user{s % 50}@example.org"))
    events.sort()

    work = tempfile.mkdtemp(prefix="pool-sim-")
    os.chmod(work, 0o755)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns.bind(("127.0.0.1", 0))
    dns_port = dns.getsockname()[1]
    threading.Thread(target=dns_server, args=(dns, txt), daemon=True).start()
    for f in ("clients", "recipients"):
        open(os.path.join(work, f), "w").write("# none\n")
    wl = [f"--whitelist-clients={work}/clients", f"--whitelist-recipients={work}/recipients", f"--delay={DELAY}"]

    def postgrey137(port):
        db = os.path.join(work, "p137"); os.makedirs(db)
        if os.geteuid() == 0: shutil.chown(db, "postgrey", "postgrey")
        return ["/usr/sbin/postgrey", f"--inet=127.0.0.1:{port}", f"--dbdir={db}", *wl]
    def ours(port, *extra):
        return ["dotnet", OURS, f"--inet=127.0.0.1:{port}", f"--dbdir={work}/o{port}", "--allow-test-time", *wl, *extra]

    setups = [
        ("postgrey 1.37", postgrey137),
        ("ours, default", lambda p: ours(p)),
        ("ours, --lookup-by-identity", lambda p: ours(p, "--lookup-by-identity", f"--dns-server=127.0.0.1:{dns_port}")),
    ]
    rows = []
    for label, command in setups:
        port = free_port()
        proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            accepted, spam_deferred, spam_total = {}, 0, 0
            for at, kind, mid, client, name, sender, rcpt in events:
                if kind == "pool" and mid in accepted: continue
                action = ask(port, client, name, sender, rcpt, at)
                deferred = action.startswith("action=DEFER")
                if kind == "pool" and not deferred:
                    accepted[mid] = at
                elif kind == "spam":
                    spam_total += 1; spam_deferred += deferred
            first, attempts = {}, {}
            for at, kind, mid, *_ in events:
                if kind == "pool":
                    first.setdefault(mid, at); attempts.setdefault(mid, []).append(at)
            # Accepted at the latest on the first attempt --delay or more after the first one
            # (earlier: the client was on the auto-whitelist).
            on_first_retry = sum(1 for m in first if m in accepted
                                 and accepted[m] <= next(t for t in attempts[m] if t - first[m] >= DELAY)) / len(first)
            delays = [accepted[m] - first[m] for m in first if m in accepted]
            within15 = sum(1 for d in delays if d <= 900) / len(first)
            median = statistics.median(delays) if delays else float("nan")
            rows.append((label, within15, on_first_retry, median, len(delays) / len(first), spam_deferred / spam_total))
        finally:
            proc.kill(); proc.wait()
    shutil.rmtree(work, ignore_errors=True)

    print(f"{a.messages} pool messages (5 providers, 12 hosts over 4 /16s each, retries from k of 12), {a.spam} one-shot spam (a third forged provider senders), --delay={DELAY}, seed {a.seed}")
    print("| server | pool mail accepted within 15 min | by its first retry after --delay | median delay | accepted in 5 days | spam deferred |")
    print("|---|---|---|---|---|---|")
    for label, w, fr, med, acc, sp in rows:
        print(f"| {label} | {w:.1%} | {fr:.1%} | {med / 60:.1f} min | {acc:.1%} | {sp:.1%} |")

if __name__ == "__main__":
    main()
