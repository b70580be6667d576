#!/usr/bin/env python3
"""Drives a gpupool agent's device API the way the `spaces` package's ZeroGPU client does.

Mirrors spaces/zero/api.py (APIClient) and spaces/zero/client.py of huggingface/pyspaces:
httpx with base_url = SPACES_ZERO_DEVICE_API_URL, every parameter in the query string, a
streamed POST /schedule whose answer is a JSON grant (200), JSON {left, wait} (429), or a
text/event-stream read with iter_text() where each chunk must be exactly one event
("event: ping" / "event: failed" / "event: succeeded" + one "data:" line with the grant).
Status codes, X-Authenticated and X-Queuing-Reason are read as that client reads them.

Run by test/e2e/agent.test.ts, which starts the real server and agent. Input (environment):
  AGENT_URL     http://127.0.0.1:<port>/apps/<app-key>
  TOKEN_PRO     X-IP-Token of a pro user; TOKEN_FREE of a free user (quota 100s, max 60s);
  TOKEN_RUNS    of a user whose tier allows one run a day.
The agent has one simulated GPU (2 slots), a 1 s grace, and the pool a 3 s queue timeout.
Prints one JSON object with what it saw; the TypeScript test checks it.
"""
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
import traceback

import httpx

URL = os.environ["AGENT_URL"]
out = {}


def self_cgroup_device_path():
    """spaces/zero/utils.py (spaces >= 0.46): the devices controller's path on cgroup v1 (and
    hybrid hosts), else the path of the first line, "0::<path>", on cgroup v2. The agent only
    allows pids in the cgroup a lease was scheduled with, so this must be the real one."""
    lines = Path("/proc/self/cgroup").read_text().strip().splitlines()
    for line in lines:
        contents = line.split(":devices:")
        if len(contents) == 2:
            return contents[1]
    return [line.split("::") for line in lines][0][1]


CGROUP = self_cgroup_device_path()


# --- the client, as spaces/zero/api.py behaves ------------------------------------------------

def client():
    # spaces/zero/client.py builds a new client per call, with a 60 s timeout.
    return httpx.Client(base_url=URL, timeout=60)


def parse_event(text):
    """One chunk, one event (sse_parse): first line 'event: …'; 'succeeded' has exactly one data line."""
    event, *data = text.strip().splitlines()
    assert event.startswith("event:"), f"chunk does not start with an event line: {text!r}"
    event = event[6:].strip()
    if event in ("ping", "failed"):
        return {"event": event, "raw": text}
    assert event == "succeeded", f"unknown event {event!r}"
    (line,) = data
    assert line.startswith("data:"), f"succeeded without a data line: {text!r}"
    return {"event": event, "data": grant(json.loads(line[5:].strip())), "raw": text}


def grant(body):
    """ScheduleResponse: idle: bool, nvidiaIndex: int, nvidiaUUID: str, allowToken: str (extra fields ignored)."""
    assert isinstance(body["idle"], bool), body
    assert isinstance(body["nvidiaIndex"], int) and not isinstance(body["nvidiaIndex"], bool), body
    assert isinstance(body["nvidiaUUID"], str), body
    assert isinstance(body["allowToken"], str), body
    return body


def quota_infos(body):
    """QuotaInfos: left: int, wait: timedelta (seconds; < 0 = over the maximum duration, 0 = runs limit)."""
    assert isinstance(body["left"], int) and not isinstance(body["left"], bool), body
    assert isinstance(body["wait"], (int, float)) and not isinstance(body["wait"], bool), body
    return {"left": body["left"], "wait": body["wait"]}


def schedule(task_id=0, token=None, duration_seconds=None, enable_queue=True, gpu_size=None, on_event=None):
    params = {"cgroupPath": CGROUP, "taskId": task_id, "enableQueue": enable_queue, "tokenVersion": 2}
    if duration_seconds is not None:
        params["durationSeconds"] = duration_seconds
    if gpu_size is not None:
        params["gpuSize"] = gpu_size
    if token is not None:
        params["token"] = token
    c = client()
    res = c.send(c.build_request(method="POST", url="/schedule", params=params), stream=True)
    meta = {"status": res.status_code, "auth": res.headers.get("X-Authenticated"), "queuing_reason": res.headers.get("X-Queuing-Reason")}
    if res.status_code not in (200, 429):
        res.close()
        return {**meta, "kind": "status"}
    if "text/event-stream" in res.headers["content-type"]:
        events = []
        for text in res.iter_text():
            if len(text) == 0:
                break
            ev = parse_event(text)
            events.append(ev)
            if on_event is not None:
                on_event(ev)
            if ev["event"] in ("succeeded", "failed"):
                break
        res.close()
        last = events[-1] if events else None
        return {**meta, "kind": "stream", "events": [e["event"] for e in events], "raw": [e["raw"] for e in events], "grant": last.get("data") if last else None}
    res.read()
    if res.status_code == 429:
        return {**meta, "kind": "quota", "quota": quota_infos(res.json())}
    return {**meta, "kind": "grant", "grant": grant(res.json())}


def allow(allow_token, pid):
    return client().post("/allow", params={"allowToken": allow_token, "pid": pid}).status_code


def release(allow_token, fail=False):
    return client().post("/release", params={"allowToken": allow_token, "fail": fail}).status_code


def queue_size():
    res = client().get("/queue-size")
    assert res.status_code == 200, res.status_code
    size = res.json()
    assert isinstance(size, int), size
    return size


def worker(ignore_term=False):
    """A stand-in for the process spaces forks to run a GPU task (it allows that process's pid)."""
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, lambda *a: (print('TERM', flush=True)))\n"
    code += "print('ready', flush=True)\nwhile True: time.sleep(0.1)\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def wait_exit(p, timeout=15):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return "still running"


# --- scenarios ------------------------------------------------------------------------------

def scenarios():
    out["startup_report"] = client().post("/startup-report").status_code
    out["queue_size_idle"] = queue_size()

    # 1. Granted now: the whole GPU (xlarge), for a pro user.
    a = schedule(task_id=1, token=os.environ["TOKEN_PRO"], duration_seconds=30, gpu_size="xlarge")
    out["grant"] = a
    w1 = worker()
    out["allow"] = allow(a["grant"]["allowToken"], w1.pid)

    # 2. The node is full: the next call waits on an event stream. Releasing the first call
    #    frees the GPU, and the stream ends with 'succeeded'. The waiting call is another task,
    #    so the first call's idle worker is stopped before the GPU is handed over.
    first_ping = threading.Event()
    result = {}

    def waiting():
        result["b"] = schedule(task_id=2, duration_seconds=10, gpu_size="large", on_event=lambda ev: first_ping.set())

    t = threading.Thread(target=waiting)
    t.start()
    assert first_ping.wait(15), "no ping while queued"
    out["queue_size_waiting"] = queue_size()
    out["release_used"] = release(a["grant"]["allowToken"])
    t.join(30)
    b = result["b"]
    out["queued"] = b
    out["evicted_worker_exit"] = wait_exit(w1)

    # 3. Release without allow: 204 ("GPU device not used"); twice or unknown: 404.
    out["release_unused"] = release(b["grant"]["allowToken"])
    out["release_again"] = release(b["grant"]["allowToken"])
    out["release_unknown"] = release("no-such-token")

    # 4. Idle worker reuse: the same task on the same GPU gets idle: true and needs no /allow.
    w2 = worker()
    r1 = schedule(task_id=7, duration_seconds=30)
    allow(r1["grant"]["allowToken"], w2.pid)
    out["reuse_release_1"] = release(r1["grant"]["allowToken"])
    r2 = schedule(task_id=7, duration_seconds=30)
    out["reuse_idle"] = r2["grant"]["idle"]
    out["reuse_same_index"] = r2["grant"]["nvidiaIndex"] == r1["grant"]["nvidiaIndex"]
    out["reuse_release_2"] = release(r2["grant"]["allowToken"])
    out["reuse_worker_alive"] = w2.poll() is None
    # A failed call's worker is dropped by the client, so the agent stops it.
    r3 = schedule(task_id=7, duration_seconds=30)
    out["reuse_fail_release"] = release(r3["grant"]["allowToken"], fail=True)
    out["failed_worker_exit"] = wait_exit(w2)

    # 5. Quota: a free user (100 s a day, 60 s max per call).
    free = os.environ["TOKEN_FREE"]
    q1 = schedule(task_id=3, token=free, duration_seconds=60, gpu_size="large")
    out["quota_first"] = q1["kind"]
    out["quota_exceeded"] = schedule(task_id=3, token=free, duration_seconds=60, gpu_size="large")
    out["duration_too_long"] = schedule(task_id=3, token=free, duration_seconds=100, gpu_size="large")
    release(q1["grant"]["allowToken"])

    # 6. Runs limit: one run a day for this user's tier.
    runs = os.environ["TOKEN_RUNS"]
    first = schedule(task_id=4, token=runs, duration_seconds=10)
    release(first["grant"]["allowToken"])
    out["runs_exceeded"] = schedule(task_id=4, token=runs, duration_seconds=10)

    # 7. A token that is not a valid X-IP-Token: 401, never a silent fallback.
    out["invalid_token"] = schedule(task_id=5, token="not-a-token", duration_seconds=10)

    # 8. No free GPU and no queue: 503. Then a queued call that times out: 'failed'.
    held = [schedule(task_id=6, duration_seconds=30, gpu_size="large") for _ in range(2)]
    out["no_gpu"] = schedule(task_id=6, duration_seconds=10, enable_queue=False)
    out["queue_timeout"] = schedule(task_id=6, duration_seconds=10)
    for h in held:
        release(h["grant"]["allowToken"])

    # 9. The deadline: a worker that ignores SIGTERM is killed after the grace; the client's
    #    release afterwards is a 404 (spaces calls it with allow_404=True).
    w3 = worker(ignore_term=True)
    d = schedule(task_id=9, duration_seconds=2)
    out["deadline_lease"] = d["grant"].get("leaseId")
    out["deadline_allow"] = allow(d["grant"]["allowToken"], w3.pid)
    out["deadline_exit"] = wait_exit(w3)
    out["deadline_output"] = w3.stdout.read().split()
    out["deadline_release"] = release(d["grant"]["allowToken"], fail=True)


try:
    scenarios()
    out["ok"] = True
except Exception:  # report what was seen so far, and why it stopped
    out["ok"] = False
    out["error"] = traceback.format_exc()
print(json.dumps(out))
