#!/usr/bin/env python3
"""Runs a command and prints its wall time, CPU time and peak RSS as JSON (os.wait4's rusage).

Usage: measure.py -- COMMAND [ARGS...]
"""
import json
import os
import subprocess
import sys
import time

args = sys.argv[1:]
if args and args[0] == "--":
    args = args[1:]
start = time.monotonic()
proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.monotonic() - start
err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
code = os.waitstatus_to_exitcode(status)
if code != 0:
    sys.stderr.write(err)
    sys.exit(f"command failed with {code}: {' '.join(args)}")
print(json.dumps({
    "wall_s": round(wall, 3),
    "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    "max_rss_kib": usage.ru_maxrss,
}))
