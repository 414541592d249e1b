#!/usr/bin/env python3
"""node_bench.py -- one shoald node against redis-server, same machine, same run.

For each persistence pairing (Shoal fsync=always vs Redis appendfsync always;
Shoal fsync=none vs Redis appendonly no) and each pipeline depth (-P 1, -P 16)
it runs `shoalctl bench` and `redis-benchmark` with the same -c/-n/-d/-r/-P,
alternating the two, several rounds, and prints medians and ratios as a
Markdown table (for BENCHMARKS.md) plus the raw figures as JSON.

Shoal traffic is sealed (a generated key file), never --insecure.

Usage: tests/bench/node_bench.py [--build build-bench] [--dir /var/tmp/x]
         [--rounds 3] [-c 50] [-n 200000] [-d 100] [-r 100000]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, what, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Shoal:
    def __init__(self, build, workdir, fsync):
        self.build = build
        self.dir = os.path.join(workdir, "shoal-" + fsync)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port, self.http = free_port(), free_port()
        ctl = os.path.join(build, "client", "shoalctl")
        self.ctl = ctl
        self.node_keys = os.path.join(self.dir, "node.keys")
        self.client_key = os.path.join(self.dir, "client.key")
        subprocess.run([ctl, "keygen", "--id", "1", "--role", "admin",
                        "--out", self.client_key], check=True)
        shutil.copyfile(self.client_key, self.node_keys)
        os.chmod(self.node_keys, 0o600)
        self.log = open(os.path.join(self.dir, "shoald.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(build, "node", "shoald"), "--id", "bench",
             "--listen", "tcp://127.0.0.1:%d" % self.port,
             "--http", "127.0.0.1:%d" % self.http,
             "--data-dir", os.path.join(self.dir, "data"),
             "--fsync", fsync, "--key-file", self.node_keys,
             "--log-level", "warn"],
            stderr=self.log)
        wait_until(lambda: http_ok("http://127.0.0.1:%d/health" % self.http),
                   "shoald /health")

    def bench(self, test, a):
        cmd = [self.ctl, "--url", "tcp://127.0.0.1:%d" % self.port,
               "--key-file", self.client_key, "--json", "bench",
               "-c", str(a.c), "-n", str(a.n), "-d", str(a.d),
               "-r", str(a.r), "-P", str(a.P), "-t", test, "--quiet"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                j = json.loads(line)
                if j.get("errors"):
                    raise RuntimeError("shoal bench errors: %s" % line)
                return {"rps": float(j["ops_per_sec"]),
                        "p50": float(j["p50_ms"]), "p99": float(j["p99_ms"])}
        raise RuntimeError("no JSON from shoalctl bench: " + out.stdout)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


class Redis:
    def __init__(self, workdir, fsync):
        self.dir = os.path.join(workdir, "redis-" + fsync)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        persist = (["--appendonly", "yes", "--appendfsync", "always"]
                   if fsync == "always" else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--daemonize", "no",
             "--loglevel", "warning"] + persist,
            stdout=subprocess.DEVNULL)
        wait_until(lambda: tcp_open(self.port), "redis-server")

    def bench(self, test, a):
        rtest = {"put": "set", "get": "get"}[test]
        cmd = ["redis-benchmark", "-p", str(self.port), "-c", str(a.c),
               "-n", str(a.n), "-d", str(a.d), "-r", str(a.r),
               "-P", str(a.P), "-t", rtest, "--csv", "-q"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            f = [x.strip('"') for x in line.split(",")]
            if len(f) >= 7 and f[0].upper() == rtest.upper():
                return {"rps": float(f[1]), "p50": float(f[4]),
                        "p99": float(f[6])}
        raise RuntimeError("cannot parse redis-benchmark: " + out.stdout)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def median(runs, k):
    return statistics.median(r[k] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("-d", type=int, default=100)
    ap.add_argument("-r", type=int, default=100000)
    ap.add_argument("--fsync", default="always,none")
    ap.add_argument("--pipeline", default="1,16")
    a = ap.parse_args()
    work = a.dir or tempfile.mkdtemp(prefix="shoal-nodebench-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    rows, raw = [], {}
    for fsync in a.fsync.split(","):
        for P in [int(x) for x in a.pipeline.split(",")]:
            a.P = P
            sh, rd = Shoal(a.build, work, fsync), Redis(work, fsync)
            try:
                for test in ("put", "get"):
                    srun, rrun = [], []
                    for i in range(a.rounds):
                        srun.append(sh.bench(test, a))
                        rrun.append(rd.bench(test, a))
                        print("%s fsync=%s P=%d round %d: shoal %.0f/s "
                              "redis %.0f/s" % (test, fsync, P, i + 1,
                                                srun[-1]["rps"],
                                                rrun[-1]["rps"]),
                              file=sys.stderr)
                    key = "%s fsync=%s -P %d" % (test, fsync, P)
                    raw[key] = {"shoal": srun, "redis": rrun}
                    rows.append((key, median(srun, "rps"), median(rrun, "rps"),
                                 median(srun, "p99"), median(rrun, "p99")))
            finally:
                sh.stop()
                rd.stop()
    print("| test (-c %d -d %d -r %d -n %d) | Shoal ops/s | Redis ops/s | ratio |"
          " Shoal p99 ms | Redis p99 ms | p99 ratio |" % (a.c, a.d, a.r, a.n))
    print("|---|--:|--:|--:|--:|--:|--:|")
    for k, s, r, sp, rp in rows:
        print("| %s | %.0f | %.0f | %.2f× | %.3f | %.3f | %.2f× |"
              % (k, s, r, s / r, sp, rp, sp / rp if rp else float("nan")))
    print(json.dumps(raw), file=open(os.path.join(work, "raw.json"), "w"))
    print("raw runs: %s" % os.path.join(work, "raw.json"), file=sys.stderr)


if __name__ == "__main__":
    main()
