#!/usr/bin/env bash
# engine_bench.sh -- the storage engine against its peers, for BENCHMARKS.md.
# On demand only, never part of the test suite.
#
#   tests/bench/engine_bench.sh [--bin PATH] [--keys N] [--runs R]
#       [--overwrites W] [--sync-seconds S] [--dir PARENT] [--raw FILE]
#       [--keep]
#
# Runs bench_engine (a Release build: cmake -S . -B build-bench
# -DCMAKE_BUILD_TYPE=Release && make -C build-bench bench_engine) for shoal,
# LMDB and RocksDB, and redis-server for the Redis figures (memory per key,
# worst write latency during BGSAVE, recovery from RDB-preamble AOF + AOF
# tail), R runs each, and prints the medians as a markdown table with the
# ratios and targets. Redis gets the same keys and values as bench_engine
# (same generator, ported to Python below) and listens on 127.0.0.1 only.
#
# Everything lives in one mktemp directory under PARENT (default: the
# current directory; not /tmp, which may be tmpfs), removed on exit with
# every redis-server started here (trap EXIT, by pid).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build-bench/tests/bench_engine
keys=1000000
runs=3
overwrites=200000
sync_seconds=10
parent=$PWD
raw=""
keep=0

die() {
    echo "engine_bench.sh: $*" >&2
    exit 2
}

need_int() { # option value
    [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] || die "$1 needs a positive integer, got '$2'"
}

while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=${2:?}; shift ;;
    --keys) need_int "$1" "${2:-}"; keys=$2; shift ;;
    --runs) need_int "$1" "${2:-}"; runs=$2; shift ;;
    --overwrites) need_int "$1" "${2:-}"; overwrites=$2; shift ;;
    --sync-seconds) need_int "$1" "${2:-}"; sync_seconds=$2; shift ;;
    --dir) parent=${2:?}; shift ;;
    --raw) raw=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[ -x "$bin" ] || die "no bench_engine at $bin; build it: cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release && make -C build-bench bench_engine"
for t in redis-server redis-cli python3; do
    command -v "$t" >/dev/null || die "$t not found"
done
if [ "$(findmnt -n -o FSTYPE -T "$parent" 2>/dev/null)" = tmpfs ]; then
    echo "engine_bench.sh: warning: $parent is tmpfs; disk figures will not mean much" >&2
fi

work=$(mktemp -d "$parent/engine_bench.XXXXXX")
cleanup() {
    local pf pid
    for pf in "$work"/*.pid; do
        [ -e "$pf" ] || continue
        pid=$(cat "$pf")
        # Only our own redis-server: the pid must still run that program.
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "$keep" = 1 ]; then
        echo "engine_bench.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results=$work/results.tsv
: >"$results"
py=$work/engine_bench.py

# ---------------------------------------------------------------------------
# Python half: the workload generator (a port of bench_engine.c's), the Redis
# driver and the table.
cat >"$py" <<'PYEOF'
import os, socket, statistics, struct, subprocess, sys, time
from array import array

M64 = (1 << 64) - 1
G = 0x9E3779B97F4A7C15
POOL = 4 << 20


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Workload:
    """Same keys and values as bench_engine.c (key_make, value_of)."""

    def __init__(self, seed=1, ksize=16, vsize=100):
        self.seed, self.ksize, self.vsize = seed, ksize, vsize
        self._pool = None

    def key(self, i):
        w0 = mix64((i + self.seed * G) & M64)
        out, j = bytearray(), 0
        while len(out) < self.ksize:
            w = w0 if j == 0 else mix64((w0 + j * G) & M64)
            out += w.to_bytes(8, "little")
            j += 1
        return bytes(out[: self.ksize])

    def pool(self):
        if self._pool is None:
            st = mix64(self.seed ^ 0x5851F42D4C957F2D)
            n = (POOL + self.vsize + 7) // 8
            words = []
            for _ in range(n):
                st = (st + G) & M64
                words.append(mix64(st))
            self._pool = struct.pack("<%dQ" % n, *words)[: POOL + self.vsize]
        return self._pool

    def value(self, i, ver):
        k = (self.seed * 0x2545F4914F6CDD1D) & M64
        off = mix64((((i << 8) & M64) ^ ver ^ k)) % POOL
        return self.pool()[off : off + self.vsize]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def gen(path, n, overwrites, which):
    """RESP SET stream: the N-key load, or the overwrites (op j writes key
    j % N at version 1 + j // N), as bench_engine's recovery phase."""
    wl = Workload()
    with open(path, "wb", buffering=1 << 20) as f:
        if which == "load":
            for i in range(n):
                f.write(resp(b"SET", wl.key(i), wl.value(i, 0)))
        else:
            for j in range(overwrites):
                i = j % n
                f.write(resp(b"SET", wl.key(i), wl.value(i, 1 + j // n)))


class Conn:
    def __init__(self, port, timeout=60):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        self.s.sendall(resp(*[a if isinstance(a, bytes) else str(a).encode() for a in args]))
        return self.read()

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def info(self, section):
        d = {}
        for ln in self.cmd("INFO", section).decode().splitlines():
            if ":" in ln and not ln.startswith("#"):
                k, v = ln.split(":", 1)
                d[k] = v
        return d

    def close(self):
        self.s.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Redis:
    def __init__(self, work, name, extra):
        self.work, self.dir = work, os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                     "--protected-mode", "yes", "--daemonize", "no",
                     "--logfile", os.path.join(self.dir, "redis.log"),
                     "--dir", self.dir, "--save", "", "--appendonly", "no"] + extra
        self.proc = None

    def start(self):
        """Spawn and wait until PING answers PONG (not -LOADING): seconds."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        with open(os.path.join(self.work, "redis-%d.pid" % self.port), "w") as f:
            f.write(str(self.proc.pid))
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited; see " + self.dir)
            try:
                c = Conn(self.port)
                while c.cmd("PING") != "PONG":
                    time.sleep(0.001)
                c.close()
                return time.monotonic() - t0
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.001)
            if time.monotonic() - t0 > 600:
                raise RuntimeError("redis-server not ready after 600 s")

    def shutdown(self, how="NOSAVE"):
        try:
            c = Conn(self.port)
            c.s.sendall(resp(b"SHUTDOWN", how.encode()))
            c.f.read()
        except OSError:
            pass
        self.proc.wait(timeout=120)
        os.unlink(os.path.join(self.work, "redis-%d.pid" % self.port))

    def rss(self):
        with open("/proc/%d/statm" % self.proc.pid) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def pipe(self, path):
        with open(path, "rb") as f:
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port),
                                  "--pipe"], stdin=f, capture_output=True, check=True)
        if b"errors: 0" not in out.stdout:
            raise RuntimeError("redis-cli --pipe: " + out.stdout.decode())


def wait_info(c, section, done, what):
    t0 = time.monotonic()
    while not done(c.info(section)):
        if time.monotonic() - t0 > 600:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.005)


def emit(name, value, unit):
    print("%s %s %s" % (name, ("%.6g" % value) if isinstance(value, float) else value, unit),
          flush=True)


def probe(port, n, out, stop):
    """Back-to-back SETs of random existing keys; each one timed."""
    wl, val = Workload(), os.urandom(100)
    c, st = Conn(port), 12345
    starts, lats = array("q"), array("q")
    while True:
        for _ in range(64):
            st = (st + G) & M64
            k = wl.key(mix64(st) % n)
            t0 = time.monotonic_ns()
            c.s.sendall(resp(b"SET", k, val))
            c.f.readline()
            lats.append(time.monotonic_ns() - t0)
            starts.append(t0)
        if os.path.exists(stop):
            break
    with open(out, "wb") as f:
        f.write(struct.pack("<q", len(starts)))
        starts.tofile(f)
        lats.tofile(f)


def read_probe(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<q", f.read(8))
        s, l = array("q"), array("q")
        s.fromfile(f, n)
        l.fromfile(f, n)
    return s, l


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))] if xs else 0


def bgsave_stall(r, c, n, work):
    """Worst and p99.9 SET latency (ns) of requests overlapping a BGSAVE."""
    out, stop = os.path.join(work, "probe.bin"), os.path.join(work, "probe.stop")
    if os.path.exists(stop):
        os.unlink(stop)
    p = subprocess.Popen([sys.executable, __file__, "probe", str(r.port), str(n), out, stop])
    time.sleep(0.5)
    b0 = time.monotonic_ns()
    c.cmd("BGSAVE")
    wait_info(c, "persistence", lambda d: d["rdb_bgsave_in_progress"] == "0", "BGSAVE")
    b1 = time.monotonic_ns()
    ok = c.info("persistence")["rdb_last_bgsave_status"]
    fork_us = int(c.info("stats")["latest_fork_usec"])
    time.sleep(0.5)
    open(stop, "w").close()
    p.wait()
    s, l = read_probe(out)
    during = [l[i] for i in range(len(s)) if s[i] <= b1 and s[i] + l[i] >= b0]
    outside = [l[i] for i in range(len(s)) if not (s[i] <= b1 and s[i] + l[i] >= b0)]
    if ok != "ok" or not during:
        raise RuntimeError("BGSAVE failed or probe saw nothing")
    emit("redis_bgsave_s", (b1 - b0) / 1e9, "s")
    emit("redis_bgsave_stall_ms", max(during) / 1e6, "ms")
    emit("redis_bgsave_p999_ms", pct(during, 99.9) / 1e6, "ms")
    emit("redis_fork_ms", fork_us / 1e3, "ms")
    emit("redis_idle_set_max_ms", max(outside) / 1e6, "ms")
    emit("redis_idle_set_p999_ms", pct(outside, 99.9) / 1e6, "ms")


def run_memory(work, load, n, ksize, vsize, run):
    r = Redis(work, "mem%d" % run, [])
    r.start()
    c = Conn(r.port)
    time.sleep(0.3)
    m0, rss0 = c.info("memory"), r.rss()
    r.pipe(load)
    if c.cmd("DBSIZE") != n:
        raise RuntimeError("redis holds %r keys, not %d" % (c.cmd("DBSIZE"), n))
    time.sleep(0.3)
    m1, rss1 = c.info("memory"), r.rss()
    used = (int(m1["used_memory"]) - int(m0["used_memory"])) / n
    rss = (rss1 - rss0) / n
    emit("redis_used_bytes_per_key", used, "B")
    emit("redis_rss_bytes_per_key", rss, "B")
    emit("redis_used_overhead_bytes_per_key", used - ksize - vsize, "B")
    emit("redis_rss_overhead_bytes_per_key", rss - ksize - vsize, "B")
    bgsave_stall(r, c, n, work)
    c.close()
    r.shutdown()


def run_recovery(work, load, over, n, run):
    extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "yes",
             "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0"]
    r = Redis(work, "aof%d" % run, extra)
    r.start()
    c = Conn(r.port)
    r.pipe(load)
    c.cmd("BGREWRITEAOF")
    wait_info(c, "persistence", lambda d: d["aof_rewrite_in_progress"] == "0"
              and d["aof_rewrite_scheduled"] == "0", "BGREWRITEAOF")
    if c.info("persistence")["aof_last_bgrewrite_status"] != "ok":
        raise RuntimeError("BGREWRITEAOF failed")
    r.pipe(over)
    c.close()
    r.shutdown("NOSAVE")  # no RDB (save ''); the AOF is flushed and fsynced
    secs = r.start()
    c = Conn(r.port)
    keys = c.cmd("DBSIZE")
    if c.info("persistence")["loading"] != "0" or keys != n:
        raise RuntimeError("recovered %r keys, expected %d" % (keys, n))
    emit("redis_recovery_s", secs, "s")
    emit("redis_recovery_keys", keys, "keys")
    c.close()
    r.shutdown()


# ---- table ---------------------------------------------------------------

def load_results(path):
    res = {}
    for ln in open(path):
        label, fig, val, unit = ln.rstrip("\n").split("\t")
        res.setdefault((label, fig), []).append(float(val))
    return {k: statistics.median(v) for k, v in res.items()}, res


def fmt(v):
    if v is None:
        return "--"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    return "%.3g" % v if abs(v) < 10 else "%.1f" % v


def table(path, runs):
    med, allv = load_results(path)
    g = lambda label, fig: med.get((label, fig))
    rows = [
        # figure, unit, shoal, lmdb, lmdb+WRITEMAP, rocksdb, redis
        ("put, fsync=none, 1 thread", "ops/s", ("none1/shoal", "put_ops"),
         ("none1/lmdb", "put_ops"), ("none1/lmdb_wm", "put_ops"), ("none1/rocksdb", "put_ops"), None),
        ("put, fsync=always, 16 threads", "ops/s", ("always16/shoal", "put_ops"),
         ("always16/lmdb", "put_ops"), None, ("always16/rocksdb", "put_ops"), None),
        ("put, fsync=always, 1 thread", "ops/s", ("always1/shoal", "put_ops"),
         ("always1/lmdb", "put_ops"), None, ("always1/rocksdb", "put_ops"), None),
        ("get, 1 thread", "ops/s", ("none1/shoal", "get_ops"), ("none1/lmdb", "get_ops"),
         ("none1/lmdb_wm", "get_ops"), ("none1/rocksdb", "get_ops"), None),
        ("scan (shoal: per shard)", "keys/s", ("none1/shoal", "scan_keys"),
         ("none1/lmdb", "scan_keys"), ("none1/lmdb_wm", "scan_keys"),
         ("none1/rocksdb", "scan_keys"), None),
        ("recovery (open + 1st get)", "s", ("recovery/shoal", "recovery_s"),
         ("recovery/lmdb_wm", "recovery_s"), None, ("recovery/rocksdb", "recovery_s"),
         ("redis", "redis_recovery_s")),
        ("snapshot / BGSAVE duration", "s", ("snapmem/shoal", "snapshot_s"), None, None, None,
         ("redis", "redis_bgsave_s")),
        ("worst write during snapshot", "ms", ("snapmem/shoal", "snap_stall_ms"), None, None,
         None, ("redis", "redis_bgsave_stall_ms")),
        ("p99.9 write during snapshot", "ms", ("snapmem/shoal", "snap_p999_ms"), None, None,
         None, ("redis", "redis_bgsave_p999_ms")),
        ("worst write, no snapshot", "ms", ("snapmem/shoal", "idle_put_max_ms"), None, None,
         None, ("redis", "redis_idle_set_max_ms")),
        ("RSS per key", "B", ("snapmem/shoal", "rss_bytes_per_key"), None, None, None,
         ("redis", "redis_rss_bytes_per_key")),
        ("overhead per key (RSS - 116)", "B", ("snapmem/shoal", "overhead_bytes_per_key"),
         None, None, None, ("redis", "redis_rss_overhead_bytes_per_key")),
        ("overhead per key, Redis used_memory", "B", None, None, None, None,
         ("redis", "redis_used_overhead_bytes_per_key")),
    ]
    print("Medians of %d runs.\n" % runs)
    print("| figure | unit | shoal | LMDB | LMDB+WRITEMAP | RocksDB | Redis |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for name, unit, *cells in rows:
        vals = [fmt(g(*c)) if c else "" for c in cells]
        print("| %s | %s | %s |" % (name, unit, " | ".join(vals)))
    print()
    targets(g)
    print("\nAll runs (figure: values):\n")
    for (label, fig), vs in sorted(allv.items()):
        print("- %s %s: %s" % (label, fig, ", ".join(fmt(v) for v in vs)))


def verdict(ok):
    return "**met**" if ok else "**missed**"


def ratio_line(desc, a, b, want, higher_better=True):
    if a is None or b is None:
        print("| %s | -- | -- | not measured |" % desc)
        return
    r = a / b if b else float("inf")
    ok = r >= want if higher_better else r <= want
    print("| %s | %s / %s | %.2fx | %s |" % (desc, fmt(a), fmt(b), r, verdict(ok)))


def targets(g):
    print("| target | shoal / peer | ratio | verdict |")
    print("|---|--:|--:|---|")
    ratio_line("put fsync=none 1 thr >= 2x LMDB NOSYNC", g("none1/shoal", "put_ops"),
               g("none1/lmdb", "put_ops"), 2.0)
    ratio_line("  (same, vs LMDB NOSYNC+WRITEMAP)", g("none1/shoal", "put_ops"),
               g("none1/lmdb_wm", "put_ops"), 2.0)
    ratio_line("put fsync=always 16 thr >= 2x RocksDB sync", g("always16/shoal", "put_ops"),
               g("always16/rocksdb", "put_ops"), 2.0)
    ratio_line("get 1 thr >= 1x LMDB", g("none1/shoal", "get_ops"), g("none1/lmdb", "get_ops"), 1.0)
    ratio_line("  (same, vs LMDB WRITEMAP run)", g("none1/shoal", "get_ops"),
               g("none1/lmdb_wm", "get_ops"), 1.0)
    ratio_line("recovery faster than Redis RDB+AOF (<1x)", g("recovery/shoal", "recovery_s"),
               g("redis", "redis_recovery_s"), 1.0, False)
    st = g("snapmem/shoal", "snap_stall_ms")
    if st is not None:
        print("| worst write during snapshot <= 10 ms | %s ms | -- | %s |"
              % (fmt(st), verdict(st <= 10.0)))
    ratio_line("worst write during snapshot <= Redis BGSAVE worst", st,
               g("redis", "redis_bgsave_stall_ms"), 1.0, False)
    ratio_line("overhead/key <= 0.5x Redis (RSS)", g("snapmem/shoal", "overhead_bytes_per_key"),
               g("redis", "redis_rss_overhead_bytes_per_key"), 0.5, False)
    ratio_line("overhead/key <= 0.5x Redis (used_memory)",
               g("snapmem/shoal", "overhead_bytes_per_key"),
               g("redis", "redis_used_overhead_bytes_per_key"), 0.5, False)


def main():
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "probe":
        probe(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif cmd == "memory":
        run_memory(sys.argv[2], sys.argv[3], int(sys.argv[4]), 16, 100, int(sys.argv[5]))
    elif cmd == "recovery":
        run_recovery(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "table":
        table(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("engine_bench.py: unknown command " + cmd)


if __name__ == "__main__":
    main()
PYEOF

log() {
    echo "[$(date +%H:%M:%S)] $*" >&2
}

# record LABEL: "name value unit" lines on stdin -> results.tsv
record() {
    local name value unit
    while read -r name value unit; do
        printf '%s\t%s\t%s\t%s\n' "$1" "$name" "$value" "$unit" >>"$results"
    done
}

bench() { # label, bench_engine args...
    local label=$1
    shift
    log "bench_engine $label: $*"
    "$bin" --keys "$keys" --dir "$work" "$@" 2>>"$work/bench_engine.log" | record "$label" ||
        die "bench_engine failed ($label); see $work/bench_engine.log (use --keep)"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $work, keys $keys, runs $runs, load $load_start"
log "generating the Redis RESP streams"
python3 "$py" gen "$work/load.resp" "$keys" "$overwrites" load
python3 "$py" gen "$work/over.resp" "$keys" "$overwrites" over

for run in $(seq 1 "$runs"); do
    log "run $run of $runs"
    bench none1/shoal --engine shoal --fsync none --threads 1 --only put,get,scan
    bench none1/lmdb --engine lmdb --fsync none --threads 1 --only put,get,scan
    bench none1/lmdb_wm --engine lmdb --lmdb-writemap --fsync none --threads 1 --only put,get,scan
    bench none1/rocksdb --engine rocksdb --fsync none --threads 1 --only put,get,scan
    for t in 16 1; do
        for e in shoal rocksdb lmdb; do
            bench "always$t/$e" --engine "$e" --fsync always --threads "$t" \
                --only put --max-seconds "$sync_seconds"
        done
    done
    bench recovery/shoal --engine shoal --fsync none --only recovery --overwrites "$overwrites"
    bench recovery/lmdb_wm --engine lmdb --lmdb-writemap --fsync none --only recovery --overwrites "$overwrites"
    bench recovery/rocksdb --engine rocksdb --fsync none --only recovery --overwrites "$overwrites"
    bench snapmem/shoal --engine shoal --fsync none --only memory,snapstall
    log "redis memory + BGSAVE"
    python3 "$py" memory "$work" "$work/load.resp" "$keys" "$run" | record redis
    log "redis recovery"
    python3 "$py" recovery "$work" "$work/load.resp" "$work/over.resp" "$keys" "$run" | record redis
done

[ -z "$raw" ] || cp "$results" "$raw"
python3 "$py" table "$results" "$runs"
echo
echo "Load average (1/5/15 min) at start: $load_start; at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr); redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')."
