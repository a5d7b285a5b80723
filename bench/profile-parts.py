"""perf script -F comm,ip,sym output (stdin) -> the service's CPU by part, in % of its samples.

Each sample goes to the first part whose rule matches its thread or any frame of its stack.
SQLite's library has no frame pointers, so its stacks stop at their first frame: its parts are
found by the function names of its leaves and by the system calls it makes (pwrite, pread, fcntl).
"""
import collections
import re
import sys

SQLITE = re.compile(r'^(sqlite3|pcache|vdbe|wal[A-Z]|pager|btree|balance|getAndInitPage|seekAndWrite|unix[A-Z]|posix|moveTo'
                    r'|accessPayload|insertCell|dropCell|fillInCell|allocateSpace|defragmentPage|releasePage|computeCellSize'
                    r'|cellSize|findCell|clearCell|freeSpace|pageInsertArray|editPage|rebuildPage|copyNodeContent|decodeFlags'
                    r'|zeroPage|getPageNormal|pager_write|robust_)')


def has(stack, *words):
    return any(w in f for f in stack for w in words)


PARTS = [
    ("JIT (tiered compilation)", lambda s, t: t.startswith('.NET Tiered')),
    ("GC", lambda s, t: 'GC' in t),
    ("log lines: formatting and writing (log thread)", lambda s, t: t.startswith('postgrey-log')),
    ("log lines: creating the event", lambda s, t: has(s, 'Serilog', 'Microsoft.Extensions.Logging', 'LogAction')),
    ("metrics", lambda s, t: has(s, 'Metrics', 'Instrument')),
    ("SQLite: WAL checkpoints (checkpoint thread)", lambda s, t: t.startswith('postgrey-db-che')),
    ("SQLite: pwrite(2) of WAL frames", lambda s, t: has(s, '__libc_pwrite', '__x64_sys_pwrite64')),
    ("SQLite: pread(2), fcntl(2) locks", lambda s, t: has(s, '__libc_pread', '__x64_sys_pread64', '__x64_sys_fcntl', '__fcntl64')),
    ("SQLite: library (B-tree, page cache, WAL)", lambda s, t: any(SQLITE.match(f) for f in s) or has(s, 'Sqlite', 'Statements')),
    ("send(2) of answers", lambda s, t: has(s, '__send', 'sendto')),
    ("read(2) of requests", lambda s, t: has(s, 'ReadMore', 'ksys_read') or 'read' in s),
    ("epoll_wait(2)", lambda s, t: has(s, 'epoll_wait')),
    ("parsing requests", lambda s, t: has(s, 'PolicyRequestParser', 'PolicySession::Read')),
    ("engine: keys, whitelists, decision", lambda s, t: has(s, 'Greylist', 'Whitelist', 'TripletKey', 'ClientAddress')),
    ("answers", lambda s, t: has(s, 'Answer', 'PolicyResponseWriter')),
    ("thread pool (timers, spinning workers)", lambda s, t: t.startswith('.NET TP') or t.startswith('.NET Timer') or has(s, 'LowLevelLifoSemaphore')),
    ("loop: epoll dispatch and the rest of its thread", lambda s, t: t.startswith('postgrey-epoll')),
]

counts = collections.Counter()
total = 0
thread, stack = None, []


def flush():
    global total
    if thread is None:
        return
    total += 1
    for name, rule in PARTS:
        if rule(stack, thread):
            counts[name] += 1
            return
    counts["other: " + thread] += 1


for line in sys.stdin:
    line = line.rstrip('\n')
    if not line.strip():
        flush()
        thread, stack = None, []
    elif not line.startswith('\t'):
        flush()
        thread, stack = line.strip(), []
    else:
        parts = line.strip().split(None, 1)
        stack.append(parts[1] if len(parts) > 1 else parts[0])
flush()
for name, n in counts.most_common():
    print(f"{n * 100 / max(total, 1):5.1f}%  {name}")
