"""Schemathesis hooks for scripts/hostile.sh (loaded through SCHEMATHESIS_HOOKS).

They keep the fuzzing bounded and harmless without hiding bad input from the coordinator:
only values the API accepts are changed, into other values it accepts.

- Long polls: a valid `wait` (0 to 60 seconds) becomes at most 0.2 s, so one case does not
  hold a worker for a minute; out-of-range, negative, non-numeric waits go through as they are.
- `GET /agents/{id}/logs?follow=true` streams until the client leaves: `follow` is sent false.
- A waited request (`POST /agents/{id}/messages?wait=true`) waits at most 0.2 s for its answer,
  and a host's poll (`POST /hosts/{name}/poll`) at most 0.2 s for orders.
- Agent templates: a string `command` becomes `true` and a string `workdir` is dropped, so the
  fuzzer never runs a program it made up, in a directory it made up, as root; pool sizes and
  scale targets over 2 become 2, so it cannot start hundreds of processes on a 2-core machine.
"""

import schemathesis

MAX_WAIT = 0.2
MAX_AGENTS = 2


def _clamp_wait(query):
    if not isinstance(query, dict):
        return
    wait = query.get("wait")
    if isinstance(wait, bool):
        return
    if isinstance(wait, (int, float)) and 0 < wait <= 60:
        query["wait"] = min(wait, MAX_WAIT)
    elif isinstance(wait, str):
        try:
            value = float(wait)
        except ValueError:
            return
        if 0 < value <= 60:
            query["wait"] = str(MAX_WAIT)
    if "follow" in query and query["follow"] not in (False, "false"):
        if query["follow"] in (True, "true"):
            query["follow"] = "false"


def _tame(body):
    if isinstance(body, list):
        for item in body:
            _tame(item)
        return
    if not isinstance(body, dict):
        return
    if isinstance(body.get("command"), str):
        body["command"] = "true"
    if isinstance(body.get("workdir"), str):
        del body["workdir"]
    for key in ("min_agents", "agents", "delta", "desired_agents"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_AGENTS:
            body[key] = MAX_AGENTS
    for value in body.values():
        _tame(value)


@schemathesis.hook
def before_call(context, case, kwargs):
    _clamp_wait(case.query)
    path = case.operation.path
    if case.method.upper() == "POST" and path.endswith("/agents/{id}/messages"):
        waits = isinstance(case.query, dict) and case.query.get("wait") in (True, "true")
        if waits and isinstance(case.body, dict):
            timeout = case.body.get("timeout_ms")
            if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 200:
                case.body["timeout_ms"] = 200
            if "timeout_ms" not in case.body:
                case.body["timeout_ms"] = 200
    if case.method.upper() == "POST" and path.endswith("/hosts/{name}/poll"):
        if isinstance(case.body, dict):
            wait = case.body.get("wait_ms")
            if isinstance(wait, int) and not isinstance(wait, bool) and wait > 200:
                case.body["wait_ms"] = 200
    _tame(case.body)
