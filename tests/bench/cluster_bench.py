#!/usr/bin/env python3
"""cluster_bench.py -- a 3-node Shoal cluster against etcd and Redis Cluster.

Issue #4's cluster benchmark, on one machine, all on loopback:

  Shoal   3 nodes (R=3, W=2, fsync=always) started by `scripts/cluster
          start 3`, driven by `shoalctl bench -c 50 -t put`;
  etcd    3 members (Debian etcd-server; etcd fsyncs every commit), put load
          through the JSON gateway `POST /v3/kv/put` (base64 key and value)
          by `wrk` with a Lua script, aimed at the leader;
  Redis   Redis Cluster of 3 masters + 3 replicas, `appendonly yes`,
          `appendfsync always`, driven by `redis-benchmark --cluster -t set`.

Same client count (50 connections, one request in flight each) and
100-byte values. Keys: Shoal "key:<12 digits>" (16 bytes) of -r 100000;
Redis "key:{tag}:<12 digits>" (22 bytes; redis-benchmark --cluster puts a
hash tag of the client's master in them) of -r 100000 per master; etcd
distinct 16-byte keys (wrk has no key space). Shoal and Redis run -n
requests, etcd --etcd-seconds. The three systems are measured in turn,
round after round, in the same run; the figures are medians of the rounds.
Targets: Shoal put ops/s >= 5x etcd and >= 1x Redis Cluster; Shoal p99 put
latency <= etcd's. The load average is printed with every measurement.

Durability of an acknowledged put: Shoal on 2 of 3 nodes' disks (W=2,
fsync=always); etcd on a majority's disks (raft); Redis on the master's
disk only (replication to the replica is asynchronous).

--catchup measures follower catch-up instead: with the Shoal cluster up,
stop one node (SIGTERM), write --catchup-mib MiB of 4 KiB values through
the cluster, restart the node with its own command line, and time until it
has caught up (replication lag 0: `shoalctl --json cluster status`, every
follower entry of it connected and streaming; else per-shard LSNs of the
nodes' /status), reporting MB/s. Without failover the shards whose primary
is the stopped node refuse writes; those puts fail after
--catchup-timeout-ms, are counted and reported, and the writes go on until
--catchup-mib MiB were acknowledged.

Peers (etcd-server etcd-client wrk redis-server redis-tools) are installed
with apt-get when missing (--no-install to refuse). Every process started
here runs with its working directory or its data directory inside the
run's directory, /var/tmp/shoal-clusterbench-*, and is stopped in a
finally block (also on SIGTERM); processes left over by an earlier, killed
run are found the same way and killed.

Usage:
  tests/bench/cluster_bench.py [--build build-bench] [--rounds 3]
      [--peers-only | --shoal-only] [-n 200000] [--etcd-seconds 10]
      [--seeds URL,URL --key-file F]     # use a running Shoal cluster
  tests/bench/cluster_bench.py --catchup [--catchup-mib 1024]
"""
import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
WORK_PREFIX = "shoal-clusterbench-"
OUR_COMMS = {"etcd", "redis-server", "shoald", "wrk", "redis-benchmark",
             "shoalctl"}
PACKAGES = {"etcd": "etcd-server", "etcdctl": "etcd-client", "wrk": "wrk",
            "redis-server": "redis-server", "redis-cli": "redis-tools",
            "redis-benchmark": "redis-tools"}

COMMANDS = []  # (system, command line) as run, for the report


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_sample(work):
    """(time, busy CPU seconds of the machine, CPU seconds of ours: the
    processes in the run dir and this script's finished children)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(v[:8]) - v[3] - v[4]) / tick  # all but idle and iowait
    ours = 0.0
    for pid in pids_under([work]):
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
            ours += (int(st[11]) + int(st[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    t = os.times()
    ours += t.children_user + t.children_system + t.user + t.system
    return time.monotonic(), busy, ours


def others_cores(a, b):
    """Cores used by other programs between two cpu_samples."""
    dt = b[0] - a[0]
    if dt <= 0:
        return 0.0
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / dt)


def note_cmd(system, cmd, cwd=None):
    line = shlex.join(cmd)
    if cwd:
        line = "(cd %s && %s)" % (shlex.quote(cwd), line)
    if (system, line) not in COMMANDS:
        COMMANDS.append((system, line))
    log("$ " + line)


def free_port(avoid=()):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in avoid:
            return p


def free_ports(n):
    got = []
    while len(got) < n:
        got.append(free_port(got))
    return got


def wait_until(pred, what, timeout=60.0, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: process exited (rc %s)" %
                               (what, proc.returncode))
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except Exception:
        return None, ""


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---- processes --------------------------------------------------------------

def proc_cwd(pid):
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_argv(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0")[:-1]]


def pids_under(dirs):
    """Our program names (OUR_COMMS) whose working directory, or one of
    whose arguments (a --data-dir), is in dirs."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(os.path.basename(d))
        if pid == os.getpid() or proc_comm(pid) not in OUR_COMMS:
            continue
        cwd = proc_cwd(pid)
        try:
            argv = proc_argv(pid)
        except OSError:
            continue
        if any(p == x or p.startswith(x + "/") for p in [cwd or ""] + argv
               for x in dirs):
            out.append(pid)
    return out


def kill_pids(pids, what):
    for pid in pids:
        log("killing %s pid %d (%s, cwd %s)" % (what, pid, proc_comm(pid),
                                                proc_cwd(pid)))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_leftovers(base):
    """Processes of earlier runs of this script (cwd in an old run dir)."""
    old = [d for d in glob.glob(os.path.join(base, WORK_PREFIX + "*"))
           if os.path.isdir(d)]
    kill_pids(pids_under(old), "leftover")


def stop_proc(p, sig=signal.SIGTERM, timeout=30):
    if p.poll() is not None:
        return
    p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def spawn(system, cmd, cwd, logpath):
    note_cmd(system, cmd, cwd)
    out = open(logpath, "a")
    try:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()


def ensure_packages(no_install):
    missing = sorted({pkg for exe, pkg in PACKAGES.items()
                      if shutil.which(exe) is None})
    if not missing:
        return
    if no_install:
        raise SystemExit("missing packages: %s (--no-install given)" %
                         " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends"] +
                missing):
        note_cmd("setup", cmd)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def version_of(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception as e:  # a version line is informative only
        return "? (%s)" % e


# ---- etcd -------------------------------------------------------------------

WRK_LUA = r"""-- put.lua (written by cluster_bench.py): etcd v3 JSON gateway
-- puts.
-- Each wrk thread writes distinct 16-byte keys "k<round:2><thread:2>
-- <counter:11>" with a 100-byte value, both base64 in the JSON body.
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = B:sub(c1 + 1, c1 + 1) .. B:sub(c2 + 1, c2 + 1) ..
      (b and B:sub(c3 + 1, c3 + 1) or "=") ..
      (c and B:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local round, counter, value64, headers
function init(args)
  round = tonumber(args[1] or "0") % 100
  counter = 0
  math.randomseed(7 + tid)
  local v = {}
  for i = 1, 100 do v[i] = string.char(math.random(0, 255)) end
  value64 = b64(table.concat(v))
  headers = {["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  local key = string.format("k%02d%02d%011d", round, tid % 100, counter)
  local body = '{"key":"' .. b64(key) .. '","value":"' .. value64 .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end
"""


def parse_duration_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        raise ValueError("bad wrk duration " + s)
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[m.group(2)]


class Etcd:
    name = "etcd"

    def __init__(self, work):
        self.dir = os.path.join(work, "etcd")
        os.makedirs(self.dir)
        ports = free_ports(6)
        self.client = ports[:3]
        self.peer = ports[3:]
        self.names = ["e1", "e2", "e3"]
        cluster = ",".join("%s=http://127.0.0.1:%d" % (n, p)
                           for n, p in zip(self.names, self.peer))
        self.procs = []
        for i, n in enumerate(self.names):
            cmd = ["etcd", "--name", n,
                   "--data-dir", os.path.join(self.dir, n + ".etcd"),
                   "--listen-client-urls",
                   "http://127.0.0.1:%d" % self.client[i],
                   "--advertise-client-urls",
                   "http://127.0.0.1:%d" % self.client[i],
                   "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer[i],
                   "--initial-advertise-peer-urls",
                   "http://127.0.0.1:%d" % self.peer[i],
                   "--initial-cluster", cluster,
                   "--initial-cluster-token", "shoal-bench",
                   "--initial-cluster-state", "new",
                   "--logger", "zap", "--log-level", "warn"]
            self.procs.append(spawn("etcd", cmd, self.dir,
                                    os.path.join(self.dir, n + ".log")))
        for i, p in enumerate(self.procs):
            url = "http://127.0.0.1:%d/health" % self.client[i]
            wait_until(lambda: '"true"' in http_get(url)[1],
                       "etcd %s /health" % self.names[i], proc=p)
        self.endpoints = ",".join("127.0.0.1:%d" % p for p in self.client)
        self.leader = self.find_leader()
        self.lua = os.path.join(self.dir, "put.lua")
        with open(self.lua, "w") as f:
            f.write(WRK_LUA)
        self.round = 0

    def ctl(self, *args):
        cmd = ["etcdctl", "--endpoints", self.endpoints] + list(args)
        env = dict(os.environ, ETCDCTL_API="3")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env=env, cwd=self.dir)
        return out.stdout

    def find_leader(self):
        for _ in range(100):
            st = json.loads(self.ctl("endpoint", "status", "-w", "json"))
            for e in st:
                s = e["Status"]
                if s.get("leader") and s["header"]["member_id"] == s["leader"]:
                    return int(e["Endpoint"].rsplit(":", 1)[1])
            time.sleep(0.1)
        raise RuntimeError("etcd has no leader")

    def revision(self):
        """The store revision: every put raises it by one."""
        st = json.loads(self.ctl("endpoint", "status", "-w", "json"))
        return max(int(e["Status"]["header"]["revision"]) for e in st)

    def bench(self, a):
        self.round += 1
        self.leader = self.find_leader()  # a re-election moves it
        cmd = ["wrk", "-t", str(a.wrk_threads), "-c", str(a.c),
               "-d", "%ds" % a.etcd_seconds, "--latency", "--timeout", "10s",
               "-s", self.lua, "http://127.0.0.1:%d" % self.leader,
               "--", str(self.round)]
        note_cmd("etcd", cmd, self.dir)
        rev0 = self.revision()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             cwd=self.dir).stdout
        r = {}
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
        m2 = re.search(r"(\d+) requests in ", out)
        if not m or "50" not in pct or "99" not in pct or not m2:
            raise RuntimeError("cannot parse wrk output:\n" + out)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errs = re.search(r"Socket errors:.*", out)
        if bad or errs:
            raise RuntimeError("etcd put failures:\n" + out)
        r = {"rps": float(m.group(1)), "p50": parse_duration_ms(pct["50"]),
             "p99": parse_duration_ms(pct["99"]),
             "requests": int(m2.group(1))}
        # The puts really landed: each answered one raised the revision.
        applied = self.revision() - rev0
        if applied < r["requests"]:
            raise RuntimeError("etcd applied %d puts, wrk counted %d answers"
                               % (applied, r["requests"]))
        return r

    def stop(self):
        for p in self.procs:
            stop_proc(p)


# ---- Redis Cluster ----------------------------------------------------------

class RedisCluster:
    name = "redis"

    def __init__(self, work):
        self.dir = os.path.join(work, "redis")
        os.makedirs(self.dir)
        ports = free_ports(12)
        self.ports, self.bus = ports[:6], ports[6:]
        self.procs = []
        for p, b in zip(self.ports, self.bus):
            d = os.path.join(self.dir, str(p))
            os.makedirs(d)
            cmd = ["redis-server", "--port", str(p), "--cluster-port", str(b),
                   "--bind", "127.0.0.1", "--dir", d,
                   "--cluster-enabled", "yes",
                   "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "5000",
                   "--appendonly", "yes", "--appendfsync", "always",
                   "--save", "", "--daemonize", "no",
                   "--loglevel", "warning"]
            self.procs.append(spawn("redis", cmd, d,
                                    os.path.join(d, "redis.log")))
        for p, proc in zip(self.ports, self.procs):
            wait_until(lambda: tcp_open(p), "redis-server :%d" % p, proc=proc)
        cmd = (["redis-cli", "--cluster", "create"] +
               ["127.0.0.1:%d" % p for p in self.ports] +
               ["--cluster-replicas", "1", "--cluster-yes"])
        note_cmd("redis", cmd)
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

        def all_ok():
            for p in self.ports:
                out = self.cli(p, "cluster", "info")
                if "cluster_state:ok" not in out:
                    return False
            return True
        wait_until(all_ok, "redis cluster_state:ok on all 6 nodes")
        # Three masters, each with one replica in sync.
        wait_until(self.replicas_synced, "redis replicas in sync")

    def cli(self, port, *args):
        out = subprocess.run(["redis-cli", "-p", str(port)] + list(args),
                             capture_output=True, text=True, cwd=self.dir)
        return out.stdout

    def replicas_synced(self):
        masters = 0
        for p in self.ports:
            info = self.cli(p, "info", "replication")
            if "role:master" in info:
                masters += 1
                if "connected_slaves:1" not in info:
                    return False
                if not re.search(r"slave0:.*state=online", info):
                    return False
        return masters == 3

    def bench(self, a):
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.ports[0]),
               "--cluster", "-c", str(a.c), "-n", str(a.n), "-d", str(a.d),
               "-r", str(a.r), "-P", "1", "-t", "set", "--csv"]
        note_cmd("redis", cmd, self.dir)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             cwd=self.dir).stdout
        for line in out.splitlines():
            f = [x.strip('"') for x in line.split(",")]
            if len(f) >= 7 and f[0].upper() == "SET":
                return {"rps": float(f[1]), "p50": float(f[4]),
                        "p99": float(f[6])}
        raise RuntimeError("cannot parse redis-benchmark output:\n" + out)

    def stop(self):
        for p in self.procs:
            stop_proc(p)


# ---- Shoal cluster ----------------------------------------------------------

URL_RE = re.compile(r"tcp://[\w.\-\[\]:]+:\d+")


def json_walk(v, path=()):
    """Yield (path, key, value) for every scalar in a JSON document."""
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                yield from json_walk(x, path + (k,))
            else:
                yield path, k, x
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from json_walk(x, path + (i,))


class ShoalCluster:
    """A Shoal cluster started by `scripts/cluster start 3 --replicas 3
    --write-quorum 2 --fsync always --dir <run dir>/shoal` on free ports,
    or a running one named by --seeds and --key-file. Seeds, key file and
    the nodes' HTTP addresses are read from the script's output ("seeds:",
    "key file:", "nI ready: ... http://..."); --seeds, --key-file and
    --http override them."""
    name = "shoal"

    def __init__(self, a, work):
        self.a = a
        self.build = os.path.abspath(a.build)
        self.ctl_bin = os.path.join(self.build, "client", "shoalctl")
        self.dir = os.path.join(work, "shoal")
        os.makedirs(self.dir)
        self.owned = not a.seeds
        self.env = dict(os.environ, SHOAL_BUILD_DIR=self.build)
        for exe in (self.ctl_bin, os.path.join(self.build, "node", "shoald")):
            if not os.access(exe, os.X_OK):
                raise SystemExit("no %s: build Release first (cmake -S . -B "
                                 "%s -DCMAKE_BUILD_TYPE=Release && cmake "
                                 "--build %s -j2 --target shoald shoalctl)"
                                 % (exe, a.build, a.build))
        help_out = subprocess.run([self.ctl_bin, "--help"],
                                  capture_output=True, text=True).stdout
        self.has_seeds = "--seeds" in help_out
        out = ""
        if self.owned:
            script = a.cluster_script
            if not os.access(script, os.X_OK):
                raise SystemExit("%s does not exist yet: no Shoal cluster "
                                 "mode to measure (use --peers-only, or "
                                 "--seeds/--key-file for a running cluster)"
                                 % script)
            base, http = self.free_bases()
            self.script_opts = ["--dir", self.dir]
            cmd = [script, "start", "3", "--replicas", "3",
                   "--write-quorum", "2", "--fsync", "always",
                   "--base-port", str(base), "--http-port", str(http)] + \
                self.script_opts
            note_cmd("shoal", ["env", "SHOAL_BUILD_DIR=" + self.build] + cmd)
            r = subprocess.run(cmd, env=self.env, cwd=self.dir,
                               capture_output=True, text=True)
            out = r.stdout + r.stderr
            with open(os.path.join(self.dir, "cluster-start.log"), "w") as f:
                f.write(out)
            if r.returncode != 0:
                raise RuntimeError("scripts/cluster start failed (rc %d):\n"
                                   "%s" % (r.returncode, out[-3000:]))
        self.seeds = self.parse_seeds(out)
        self.key_file = a.key_file or self.parse_key_file(out)
        self.http = self.parse_http(out)
        if not self.seeds or not self.key_file:
            raise RuntimeError("cannot tell the seed URLs (%s) or key file "
                               "(%s) from scripts/cluster's output (give "
                               "--seeds and --key-file):\n%s"
                               % (self.seeds, self.key_file, out[-3000:]))
        log("shoal: seeds %s, key file %s, http %s"
            % (",".join(self.seeds), self.key_file, ",".join(self.http)))
        self.check_config()

    @staticmethod
    def free_bases():
        """Client base port P (node i: P+10(i-1), peer port one above) and
        HTTP base H (H+10(i-1)) with all nine ports of 3 nodes free."""
        import random
        rnd = random.Random(os.getpid())
        # Below the ephemeral range (32768 up): a port an outgoing
        # connection holds there cannot be listened on later.
        for _ in range(200):
            p, h = rnd.randrange(20000, 25000), rnd.randrange(26000, 32000)
            ports = [p + 10 * i + k for i in range(3) for k in (0, 1)] + \
                [h + 10 * i for i in range(3)]
            ok = True
            for q in ports:
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", q))
                    except OSError:
                        ok = False
                        break
            if ok:
                return p, h
        raise RuntimeError("no free port range for the Shoal cluster")

    # What scripts/cluster prints is read generously: a "seeds" line or
    # SHOAL_URL=, else the first tcp:// URL of each node line ("n1 ...").
    def parse_seeds(self, out):
        if self.a.seeds:
            return self.a.seeds.split(",")
        for line in out.splitlines():
            m = re.search(r"SHOAL_URL=['\"]?([^\s'\"]+)", line)
            if m:
                return m.group(1).split(",")
        for line in out.splitlines():
            if line.lower().startswith("seeds") and URL_RE.search(line):
                return URL_RE.findall(line)
        seeds = []
        for line in out.splitlines():
            if re.match(r"\s*n\d+\b", line) and URL_RE.search(line):
                u = URL_RE.search(line).group(0)
                if u not in seeds:
                    seeds.append(u)
        return seeds

    def parse_key_file(self, out):
        pats = [r"SHOAL_KEY_FILE=['\"]?([^\s'\"]+)",
                r"key[- _]file:?\s+([^\s'\",]+)",
                r"--key-file[= ]+([^\s'\"]+)",
                r"(\S+admin\.key)\b"]
        for pat in pats:
            for m in re.finditer(pat, out):
                p = m.group(1).rstrip(",.;:")
                if os.path.isfile(p):
                    return p
        p = os.path.join(self.dir, "admin.key")
        return p if os.path.isfile(p) else None

    def parse_http(self, out):
        if self.a.http:
            return self.a.http.split(",")
        hs = []
        for m in re.finditer(r"http://([\w.\-]+:\d+)", out):
            if m.group(1) not in hs:
                hs.append(m.group(1))
        return hs

    def ctl_cmd(self, *args):
        cmd = [self.ctl_bin]
        if self.has_seeds:
            cmd += ["--seeds", ",".join(self.seeds)]
        else:
            for s in self.seeds:
                cmd += ["--url", s]
        return cmd + ["--key-file", self.key_file] + list(args)

    def status(self, http):
        code, body = http_get("http://%s/status" % http)
        if code != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def cluster_status(self):
        """`shoalctl --json cluster status` (one object), or None when it
        fails (exit code 5 also when a node is down)."""
        r = subprocess.run(self.ctl_cmd("--json", "--timeout-ms", "2000",
                                        "cluster", "status"),
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            return None
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    pass
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def check_config(self):
        """R=3, W=2 from the cluster file, fsync=always from every node's
        /status, and every node up in `shoalctl cluster status`."""
        conf = os.path.join(self.dir, "cluster.conf")
        if os.path.isfile(conf):
            kv = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)", open(conf).read(),
                                 re.M))
            log("shoal: %s: shards=%s replicas=%s write_quorum=%s"
                % (conf, kv.get("shards"), kv.get("replicas"),
                   kv.get("write_quorum")))
            if kv.get("replicas") != "3" or kv.get("write_quorum") != "2":
                raise RuntimeError("cluster file %s is not R=3 W=2" % conf)
        for h in self.http:
            st = self.status(h)
            if st and st.get("fsync") not in (None, "always"):
                raise RuntimeError("node %s runs fsync=%s, want always"
                                   % (h, st.get("fsync")))
        cs = self.cluster_status()
        if cs is None:
            log("shoal: `shoalctl cluster status` did not answer for all "
                "nodes")
        else:
            log("shoal: cluster status: map epoch %s, %d nodes, %s down"
                % (cs.get("map_epoch"), len(cs.get("nodes", [])),
                   cs.get("nodes_down")))

    def bench_json(self, args, global_opts=()):
        cmd = self.ctl_cmd("--json", *global_opts, "bench", "--quiet", *args)
        note_cmd("shoal", cmd, self.dir)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir)
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line), r.returncode
        raise RuntimeError("no JSON from shoalctl bench (rc %d):\n%s%s"
                           % (r.returncode, r.stdout, r.stderr[-2000:]))

    def bench(self, a):
        j, rc = self.bench_json(["-c", str(a.c), "-n", str(a.n),
                                 "-d", str(a.d), "-r", str(a.r), "-P", "1",
                                 "-t", "put"])
        if j.get("errors") or rc != 0:
            raise RuntimeError("shoal bench errors (rc %d): %s" % (rc, j))
        return {"rps": float(j["ops_per_sec"]), "p50": float(j["p50_ms"]),
                "p99": float(j["p99_ms"]), "p999": float(j["p999_ms"])}

    # -- nodes as processes (for --catchup) --
    def node_pids(self):
        """pid -> pid file of each node (the script's D/nI.pid), else the
        shoald processes whose data dir is in ours (pid file None)."""
        pids = {}
        for pf in sorted(glob.glob(os.path.join(self.dir, "**", "*.pid"),
                                   recursive=True)):
            try:
                pid = int(open(pf).read().strip())
            except (OSError, ValueError):
                continue
            if proc_comm(pid) == "shoald":
                pids[pid] = pf
        if not pids:
            for pid in pids_under([self.dir]):
                if proc_comm(pid) == "shoald":
                    pids[pid] = None
        return pids

    def stop(self):
        if not self.owned:
            return
        subprocess.run([self.a.cluster_script, "stop"] + self.script_opts,
                       env=self.env, cwd=self.dir, capture_output=True)
        # Whatever still runs with its data in our run dir (a node the
        # script no longer knows) goes by SIGTERM, then SIGKILL.
        for pid in pids_under([self.dir]):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 30
        while pids_under([self.dir]) and time.monotonic() < end:
            time.sleep(0.1)
        kill_pids(pids_under([self.dir]), "shoal node still running")


def opt_value(argv, name):
    """The value of --name in an argv (--name V or --name=V), or None."""
    for i, x in enumerate(argv):
        if x == name and i + 1 < len(argv):
            return argv[i + 1]
        if x.startswith(name + "="):
            return x[len(name) + 1:]
    return None


def node_identity(argv):
    """(id, http host:port) of a shoald argv, also from its --config file."""
    nid, http = opt_value(argv, "--id"), opt_value(argv, "--http")
    conf = opt_value(argv, "--config")
    if conf and (nid is None or http is None):
        try:
            for line in open(conf):
                m = re.match(r"\s*(id|http)\s*=\s*(\S+)", line.split("#")[0])
                if m and m.group(1) == "id" and nid is None:
                    nid = m.group(2)
                if m and m.group(1) == "http" and http is None:
                    http = m.group(2)
        except OSError:
            pass
    return nid, http


def lag_from_cluster_status(cs, victim):
    """The victim's lag from `shoalctl --json cluster status`: the sum of
    "lag" over the follower entries naming it in every primary's shards,
    and whether all of those are connected and streaming. None when no
    entry names it (or a node is down)."""
    if cs is None or cs.get("nodes_down"):
        return None, False
    lag, n, streaming = 0, 0, True
    for node in cs.get("nodes", []):
        for sh in node.get("shards", []):
            if not sh.get("primary"):
                continue
            for f in sh.get("followers", []):
                if f.get("node_id") != victim:
                    continue
                n += 1
                lag += int(f.get("lag", 0))
                if not f.get("connected", True) or \
                        f.get("state", "streaming") != "streaming":
                    streaming = False
    return (lag, streaming) if n else (None, False)


def lag_of(sh, victim_id, victim_http, others_http, need_cs=False):
    """The victim's replication lag in LSNs, and how it was found.

    1. `shoalctl --json cluster status`: followers[].lag of the victim in
       every primary's shards; counted as 0 only when all of them are
       connected and streaming;
    2. (unless need_cs: that command worked before) per-shard LSNs from
       every node's /status: for each shard, the highest LSN on any other
       node minus the victim's.
    None while nothing tells."""
    lag, streaming = lag_from_cluster_status(sh.cluster_status(), victim_id)
    if lag is not None:
        if lag == 0 and not streaming:
            return 1, "cluster status (lag 0, not yet streaming)"
        return lag, "cluster status"
    if need_cs:
        return None, "cluster status not answering"
    vst = sh.status(victim_http)
    if vst is None:
        return None, "victim /status not answering"
    mine = {s["shard"]: s.get("lsn", 0) for s in vst.get("shards", [])}
    best = {}
    for h in others_http:
        st = sh.status(h)
        if st is None:
            return None, "node %s /status not answering" % h
        for s in st.get("shards", []):
            best[s["shard"]] = max(best.get(s["shard"], 0), s.get("lsn", 0))
    # With R = N = 3 the victim holds every shard.
    lag = sum(max(0, lsn - mine.get(sid, 0)) for sid, lsn in best.items())
    return lag, "per-shard LSNs in /status"


def catchup(a, sh):
    pids = sh.node_pids()
    if len(pids) < 2:
        raise RuntimeError("cannot find the Shoal nodes' processes (pid "
                           "files or shoald working in %s): %s"
                           % (sh.dir, pids))
    nodes = []
    for pid, pf in sorted(pids.items()):
        argv = proc_argv(pid)
        nid, http = node_identity(argv)
        nodes.append({"pid": pid, "pidfile": pf, "argv": argv,
                      "cwd": proc_cwd(pid), "id": nid, "http": http})
    nodes.sort(key=lambda n: (len(n["id"] or ""), n["id"] or ""))
    pick = [n for n in nodes if n["id"] == a.catchup_node] if a.catchup_node \
        else nodes[-1:]
    if not pick:
        raise RuntimeError("no node %s among %s" % (a.catchup_node,
                                                    [n["id"] for n in nodes]))
    v = pick[0]
    others = [n["http"] for n in nodes if n is not v and n["http"]]
    if not v["http"] or not v["id"]:
        raise RuntimeError("cannot tell the victim's --id/--http from %s"
                           % v["argv"])
    # Start from a caught-up cluster, or the time would include old lag.
    need_cs = sh.cluster_status() is not None
    end = time.monotonic() + 120
    while True:
        lag0, how = lag_of(sh, v["id"], v["http"], others, need_cs)
        if lag0 == 0 or time.monotonic() > end:
            break
        time.sleep(a.catchup_poll)
    log("catchup: victim %s (pid %d, http %s); lag before: %s (%s)"
        % (v["id"], v["pid"], v["http"], lag0, how))
    if lag0 != 0:
        raise RuntimeError("%s's lag is %s (%s) before the test, not 0"
                           % (v["id"], lag0, how))

    log("catchup: SIGTERM %s" % v["id"])
    os.kill(v["pid"], signal.SIGTERM)
    wait_until(lambda: proc_comm(v["pid"]) != "shoald", "victim to exit",
               timeout=60)

    # Without failover (a static cluster map) the shards whose primary is
    # the stopped node refuse writes: those puts fail after --timeout-ms
    # and are not counted, so more clients keep the others busy, and runs
    # repeat until --catchup-mib MiB were acknowledged.
    total = a.catchup_mib << 20
    load_before = loadavg()
    acked = errors = requests = 0
    by_status = {}
    t0 = time.monotonic()
    while acked * a.catchup_value < total:
        left = total - acked * a.catchup_value
        share = acked / requests if requests else 1.0
        n = max(1000, int(left / a.catchup_value / max(share, 0.05)))
        j, rc = sh.bench_json(["-c", str(a.catchup_clients), "-n", str(n),
                               "-d", str(a.catchup_value),
                               "-r", str(10 ** 12), "-P", "1", "-t", "put"],
                              ["--timeout-ms", str(a.catchup_timeout_ms)])
        requests += int(j["requests"])
        errors += int(j.get("errors", 0))
        acked = requests - errors
        for k, x in j.get("errors_by_status", {}).items():
            by_status[k] = by_status.get(k, 0) + x
        log("catchup: %d puts acknowledged, %d failed %s so far (rc %d)"
            % (acked, errors, by_status, rc))
        if int(j["requests"]) == int(j.get("errors", 0)):
            raise RuntimeError("no write was acknowledged with %s down"
                               % v["id"])
    t_write = time.monotonic() - t0
    written = acked * a.catchup_value
    log("catchup: wrote %d x %d B = %.1f MiB in %.1f s with %s down "
        "(%d failed: %s)" % (acked, a.catchup_value, written / 2 ** 20,
                             t_write, v["id"], errors, by_status))

    logf = os.path.join(sh.dir, "%s.log" % v["id"])  # the script's log
    note_cmd("shoal", v["argv"], v["cwd"])
    out = open(logf, "a")
    t_start = time.monotonic()
    p = subprocess.Popen(v["argv"], cwd=v["cwd"], stdout=out,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    if v["pidfile"]:
        with open(v["pidfile"], "w") as f:
            f.write("%d\n" % p.pid)
    # A poll's answer describes some moment between its ask and its
    # answer, so lag 0 was reached after the ask of the last poll that
    # still saw lag (t_lo) and before the answer of the first that saw 0
    # (t_zero, the figure used: an upper bound).
    t_health, t_zero, t_lo, last, how = None, None, 0.0, None, "?"
    zeros = 0
    deadline = t_start + a.catchup_timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError("restarted %s exited (rc %d), see %s"
                               % (v["id"], p.returncode, logf))
        if t_health is None and http_get("http://%s/health" % v["http"],
                                         timeout=1)[0] == 200:
            t_health = time.monotonic() - t_start
            log("catchup: %s healthy after %.2f s" % (v["id"], t_health))
        t_ask = time.monotonic() - t_start
        lag, how = lag_of(sh, v["id"], v["http"], others, need_cs)
        t_got = time.monotonic() - t_start
        if lag != last:
            log("catchup: t=%.2f..%.2f s lag %s (%s)"
                % (t_ask, t_got, lag, how))
            last = lag
        if lag == 0:
            zeros += 1
            if t_zero is None:
                t_zero = t_got
            if zeros >= 3:  # 0 three polls in a row, not a blip
                break
        else:
            zeros, t_zero, t_lo = 0, None, t_ask
        time.sleep(a.catchup_poll)
    if t_zero is None or zeros < 3:
        raise RuntimeError("%s did not catch up within %d s (lag %s)"
                           % (v["id"], a.catchup_timeout, last))
    mbs = written / 1e6 / t_zero
    # The caught-up node holds what the others hold (R = N = 3: all keys).
    keys = {}
    for h in [v["http"]] + others:
        st = sh.status(h) or {}
        keys[h] = sum(x.get("keys", 0) for x in st.get("shards", []))
    log("catchup: keys per node after catch-up: %s" % keys)
    if len(set(keys.values())) != 1:
        log("catchup: WARNING: the nodes hold different key counts")
    print("## Follower catch-up (load %s before the writes, %s at the end)\n"
          % (load_before, loadavg()))
    print("| figure | value |\n|---|--:|")
    print("| data written while %s was down (%d B values, acknowledged) | "
          "%.1f MiB |" % (v["id"], a.catchup_value, written / 2 ** 20))
    print("| acknowledged write throughput with one node down (-c %d) | "
          "%.0f puts/s, %.1f MB/s |" % (a.catchup_clients, acked / t_write,
                                       written / 1e6 / t_write))
    print("| puts refused while it was down (primary down, --timeout-ms %d)"
          " | %d %s |" % (a.catchup_timeout_ms, errors, by_status or ""))
    print("| restart to /health 200 | %s s |"
          % ("%.2f" % t_health if t_health is not None else "?"))
    print("| restart to lag 0 (%s; reached after %.2f s) | %.2f s |"
          % (how, t_lo, t_zero))
    print("| catch-up rate (value bytes / time to lag 0) | **%.1f MB/s** |"
          % mbs)
    return {"written_bytes": written, "write_s": t_write, "health_s": t_health,
            "catchup_s": t_zero, "catchup_lo_s": t_lo, "mb_per_s": mbs,
            "lag_source": how,
            "acked": acked, "errors": errors, "errors_by_status": by_status}


# ---- main -------------------------------------------------------------------

def fmt_ratio(x):
    return "%.2f×" % x if x == x else "n/a"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default="build-bench",
                    help="Shoal Release build dir (default build-bench)")
    ap.add_argument("--dir", default=None,
                    help="parent of the run dir (default /var/tmp)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("-n", type=int, default=200000,
                    help="requests per Shoal and Redis round")
    ap.add_argument("-d", type=int, default=100)
    ap.add_argument("-r", type=int, default=100000)
    ap.add_argument("--etcd-seconds", type=int, default=10,
                    help="wrk -d per etcd round")
    ap.add_argument("--wrk-threads", type=int, default=2)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--peers-only", action="store_true")
    g.add_argument("--shoal-only", action="store_true")
    ap.add_argument("--systems", default=None,
                    help="comma list of shoal,etcd,redis (overrides the "
                         "two switches)")
    ap.add_argument("--seeds", help="running Shoal cluster: seed URLs, "
                    "comma-separated (with --key-file)")
    ap.add_argument("--key-file", help="Shoal admin key file")
    ap.add_argument("--cluster-script",
                    default=os.path.join(ROOT, "scripts", "cluster"),
                    help="what starts the cluster: SCRIPT start 3 / "
                    "SCRIPT stop (default scripts/cluster)")
    ap.add_argument("--http", help="Shoal nodes' HTTP host:port, "
                    "comma-separated (default: from scripts/cluster)")
    ap.add_argument("--catchup", action="store_true",
                    help="measure follower catch-up instead")
    ap.add_argument("--catchup-mib", type=int, default=1024)
    ap.add_argument("--catchup-value", type=int, default=4096)
    ap.add_argument("--catchup-clients", type=int, default=200,
                    help="shoalctl bench -c for the catch-up writes")
    ap.add_argument("--catchup-timeout-ms", type=int, default=250,
                    help="shoalctl --timeout-ms for the catch-up writes "
                    "(puts to a stopped primary fail after it)")
    ap.add_argument("--catchup-node", default=None,
                    help="node id to stop (default: the last one)")
    ap.add_argument("--catchup-timeout", type=int, default=1800)
    ap.add_argument("--catchup-poll", type=float, default=0.2)
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run dir (data, logs) afterwards")
    a = ap.parse_args()

    if a.systems:
        systems = a.systems.split(",")
    elif a.catchup or a.shoal_only:
        systems = ["shoal"]
    elif a.peers_only:
        systems = ["etcd", "redis"]
    else:
        systems = ["shoal", "etcd", "redis"]
    if set(systems) - {"shoal", "etcd", "redis"}:
        ap.error("--systems: shoal, etcd, redis")

    # SIGTERM (timeout, a closed terminal) unwinds through the finally
    # below like ^C, so no cluster is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = a.dir or "/var/tmp"
    kill_leftovers(base)
    if "etcd" in systems or "redis" in systems:
        ensure_packages(a.no_install)
    work = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=base)
    log("run dir %s, load %s" % (work, loadavg()))
    started = []
    raw = {s: [] for s in systems}
    try:
        for s in systems:  # start all first: the rounds alternate
            log("starting %s (load %s)" % (s, loadavg()))
            if s == "shoal":
                started.append(ShoalCluster(a, work))
            elif s == "etcd":
                started.append(Etcd(work))
            else:
                started.append(RedisCluster(work))
        if a.catchup:
            res = catchup(a, started[0])
            with open(os.path.join(work, "catchup.json"), "w") as f:
                json.dump(res, f)
            print_commands()
            return
        for i in range(a.rounds):
            for sysobj in started:
                la = loadavg()
                c0 = cpu_sample(work)
                r = sysobj.bench(a)
                r["load"] = la
                r["others_cores"] = others_cores(c0, cpu_sample(work))
                raw[sysobj.name].append(r)
                log("round %d %s: %.0f puts/s p50 %.3f ms p99 %.3f ms "
                    "(load %s; other programs used %.2f cores)"
                    % (i + 1, sysobj.name, r["rps"], r["p50"], r["p99"], la,
                       r["others_cores"]))
    finally:
        for sysobj in reversed(started):
            try:
                sysobj.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (sysobj.name, e))
        kill_pids(pids_under([work]), "still running")
        with open(os.path.join(work, "raw.json"), "w") as f:
            json.dump(raw, f, indent=1)
        if not a.keep:
            for sub in ("etcd", "redis", "shoal"):
                shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
        log("raw runs: %s" % os.path.join(work, "raw.json"))
    report(a, systems, raw)


def print_commands():
    print("\nCommands (as run):\n")
    print("```sh")
    for system, line in COMMANDS:
        print("# %s\n%s" % (system, line))
    print("```")
    if any(system == "etcd" for system, _ in COMMANDS):
        print("\nput.lua is WRK_LUA in tests/bench/cluster_bench.py.")


def report(a, systems, raw):
    med = {s: {k: statistics.median(r[k] for r in raw[s])
               for k in ("rps", "p50", "p99")} for s in systems if raw[s]}
    label = {"shoal": "Shoal, 3 nodes R=3 W=2 fsync=always",
             "etcd": "etcd, 3 members (JSON gateway, wrk)",
             "redis": "Redis Cluster 3+3, appendfsync always"}
    print("## Cluster puts, -c %d, %d-byte values, %d rounds (medians)\n"
          % (a.c, a.d, a.rounds))
    print("| system | puts/s | p50 ms | p99 ms | rounds: puts/s (load at "
          "start, cores other programs used) |")
    print("|---|--:|--:|--:|---|")
    for s in systems:
        if s not in med:
            continue
        m = med[s]
        print("| %s | %.0f | %.3f | %.3f | %s |" % (
            label[s], m["rps"], m["p50"], m["p99"],
            "; ".join("%.0f (%s, %.2f)" % (r["rps"], r["load"].split()[0],
                                            r["others_cores"])
                      for r in raw[s])))
    if "shoal" in med:
        rows = []
        if "etcd" in med:
            rows.append(("puts/s >= 5x etcd", med["shoal"]["rps"],
                         med["etcd"]["rps"], lambda x: x >= 5))
            rows.append(("p99 <= etcd's", med["shoal"]["p99"],
                         med["etcd"]["p99"], lambda x: x <= 1))
        if "redis" in med:
            rows.append(("puts/s >= 1x Redis Cluster", med["shoal"]["rps"],
                         med["redis"]["rps"], lambda x: x >= 1))
        if rows:
            print("\n| target | shoal / peer | ratio | verdict |")
            print("|---|--:|--:|---|")
        for name, s, p, ok in rows:
            x = s / p if p else float("nan")
            f = "%.3f ms / %.3f ms" if "p99" in name else "%.0f / %.0f"
            print("| %s | %s | %s | %s |"
                  % (name, f % (s, p), fmt_ratio(x), "**met**" if ok(x) else
                     "not met"))
    elif "etcd" in med and "redis" in med:
        print("\nShoal targets from these: >= %.0f puts/s (5x etcd, 1x Redis "
              "Cluster: the larger), p99 <= %.3f ms (etcd)"
              % (max(5 * med["etcd"]["rps"], med["redis"]["rps"]),
                 med["etcd"]["p99"]))
    print_commands()


if __name__ == "__main__":
    main()
