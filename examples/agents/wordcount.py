#!/usr/bin/env python3
"""A sample agent for `flotilla worker`: counts words in the task's text.

The worker runs this once per task with the task's payload (JSON) on standard input and
the FLOTILLA_TASK_* variables in the environment. Whatever it prints on standard output
is the result (JSON when it is JSON); a non-zero exit is a failure, retried by Flotilla.
"""
import json
import os
import sys
import time

payload = json.load(sys.stdin)
text = payload.get("text", "")
if payload.get("fail"):
    print(f"asked to fail: {payload['fail']}", file=sys.stderr)
    sys.exit(3)
time.sleep(float(payload.get("sleep", 0.05)))
words = text.split()
print(json.dumps({
    "task": os.environ.get("FLOTILLA_TASK_ID"),
    "words": len(words),
    "longest": max(words, key=len) if words else None,
}))
