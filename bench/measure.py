#!/usr/bin/env python3
"""Runs a command and prints its wall time, CPU time and peak RSS as JSON (GNU time's figures).

Usage: measure.py -- COMMAND [ARGS...]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

args = sys.argv[1:]
if args and args[0] == "--":
    args = args[1:]
# Peak RSS comes from GNU time (`%M`), not from os.wait4 here: Python spawns with vfork, and the
# kernel carries this interpreter's own high-water mark (about 14 MiB) over to the child at exec,
# which would put a floor under every figure. GNU time forks a copy of its own small image.
TIME = "/usr/bin/time"
if not os.access(TIME, os.X_OK):
    sys.exit("bench/measure.py needs GNU time at /usr/bin/time (Debian package `time`)")
report = tempfile.NamedTemporaryFile(prefix="measure-", suffix=".txt", delete=False)
report.close()
try:
    start = time.monotonic()
    proc = subprocess.Popen([TIME, "-f", "%U %S %M", "-o", report.name] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    wall = time.monotonic() - start
    with open(report.name) as f:
        lines = f.read().strip().splitlines()
finally:
    os.unlink(report.name)
if proc.returncode != 0:
    sys.stderr.write(err.decode("utf-8", "replace"))
    sys.exit(f"command failed with {proc.returncode}: {' '.join(args)}")
user, system, max_rss = lines[-1].split()
print(json.dumps({
    "wall_s": round(wall, 3),
    "cpu_s": round(float(user) + float(system), 3),
    "max_rss_kib": int(max_rss),
}))
