#!/usr/bin/env python3
"""Kill drill: how fast breakwater brings a crashed service back under load.

Runs `breakwater run -- python3 -m http.server PORT` on 127.0.0.1 with the
embedded default config, sends it a paced load (default 300 requests/s
from a few keep-alive client threads, each request with a 2 s timeout),
SIGKILLs the supervised child every N seconds a few times, and reports
per kill: the restart delay breakwater chose, the time from the kill to
the first request served again, and the requests that failed until then.
Everything stays on loopback and stops by itself.

    scripts/kill-drill.py --breakwater target/debug/breakwater --kills 6 --every 20

Measured on the 2-core dev machine (debug builds, 6 kills 20 s apart,
300 req/s). Before (restart delay reset only after a 60 s run):

    restart delay  0.24  0.50  1.00  2.10  3.24  8.64 s
    serving again  5.02  5.02  1.16  5.01 19.89  never (in 20 s)
    failed/kill 2807, requests served 0.599, breakwater's MTTR 2.79 s

After (reset once ready for backoff.reset_after, 10 s):

    restart delay  0.25  0.30  0.29  0.26  0.23  0.26 s
    serving again  5.02  0.47  0.45  0.38  0.39  0.39 s
    failed/kill 355, requests served 0.949, breakwater's MTTR 0.41 s
    (a second run: 0.34-0.68 s every time, 133 failed/kill, 0.981)

A 5.02 s "serving again" is the route's circuit breaker (open_duration
5 s) when five requests were caught by the crash — in both builds; the
long tail before is the growing delay plus the automatic degradation
level, which an outage over 2 s raises and which steps down every 15 s.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def wait(what, check, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def client(port, rate, until, results, lock):
    """Sends GET / at `rate` per second until `until`; records (time, ok)."""
    interval = 1.0 / rate
    connection = None
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= until:
            break
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        sent = time.monotonic()
        ok, reason = False, "error"
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
            reason = response.getheader("x-breakwater-reason") or str(response.status)
            if response.getheader("connection", "").lower() == "close":
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException):
            if connection is not None:
                connection.close()
            connection = None
        with lock:
            results.append((sent, ok, reason))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakwater", default="target/debug/breakwater")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    parser.add_argument("--rps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=6)
    args = parser.parse_args()

    listen, admin, upstream = free_port(), free_port(), free_port()
    served_dir = tempfile.mkdtemp(prefix="kill-drill-")
    with open(os.path.join(served_dir, "index.html"), "w") as page:
        page.write("ok\n")
    proxy = subprocess.Popen(
        [
            args.breakwater, "run",
            "--listen", f"127.0.0.1:{listen}",
            "--admin", f"127.0.0.1:{admin}",
            "--upstream", f"127.0.0.1:{upstream}",
            "--", sys.executable, "-m", "http.server", str(upstream),
            "--bind", "127.0.0.1", "--directory", served_dir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = []
    reader = threading.Thread(target=lambda: log.extend(proxy.stderr), daemon=True)
    reader.start()
    try:
        status_url = f"http://127.0.0.1:{admin}/status"
        wait("ready", lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2).status == 200, 20)
        results, lock = [], threading.Lock()
        start = time.monotonic()
        until = start + args.every * (args.kills + 1)
        clients = [
            threading.Thread(target=client, args=(listen, args.rps / args.threads, until, results, lock))
            for _ in range(args.threads)
        ]
        for thread in clients:
            thread.start()
        kills = []
        for n in range(args.kills):
            time.sleep(max(0.0, start + args.every * (n + 1) - time.monotonic()))
            pid = wait("a running child", lambda: get_json(status_url)["supervisor"]["pid"], 10)
            kills.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)
        for thread in clients:
            thread.join()
        status = get_json(status_url)["supervisor"]
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()

    reader.join(timeout=5)
    delays = re.findall(r"restarting in ([0-9.]+(?:us|µs|ms|s))", "".join(log))
    results.sort()
    rows = []
    for n, killed in enumerate(kills):
        end = kills[n + 1] if n + 1 < len(kills) else until
        window = [(at, ok, why) for at, ok, why in results if killed <= at < end]
        back = next((at for at, ok, _ in window if ok), None)
        failed = [why for _, ok, why in window if not ok]
        reasons = {why: failed.count(why) for why in sorted(set(failed))}
        rows.append((delays[n] if n < len(delays) else "?", None if back is None else back - killed, len(failed), reasons))
    total = len(results)
    good = sum(1 for _, ok, _ in results if ok)
    print(f"breakwater: {args.breakwater}")
    print(f"load: {args.rps} req/s, {args.kills} SIGKILLs every {args.every:g}s, {total} requests")
    print("kill  restart delay  serving again  failed requests  by x-breakwater-reason")
    for n, (delay, back, failed, reasons) in enumerate(rows, 1):
        back_text = "never" if back is None else f"{back:.2f}s"
        print(f"{n:>4}  {delay:>13}  {back_text:>13}  {failed:>15}  {reasons}")
    backs = [back for _, back, _, _ in rows if back is not None]
    if backs:
        print(f"mean time to serving again: {sum(backs) / len(backs):.2f}s")
    print(f"failed requests per kill: {sum(f for _, _, f, _ in rows) / max(1, len(rows)):.0f}")
    print(f"availability (requests served / sent): {good / max(1, total):.3f}")
    print(f"breakwater's own MTTR: {status.get('mttr_seconds')}, availability: {status.get('availability')}")


if __name__ == "__main__":
    main()
