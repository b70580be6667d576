"""An app holding a valid app key tries to have the agent stop someone else's process.

Usage: allow_other_pid.py <device API base URL> <victim pid>

It asks for a 3 s lease (room for a stalled machine before its deadline), allows the victim's pid
(which must be refused), then a child of its own (which must be allowed), and prints one JSON line
with both answers; once its child is stopped at the deadline it prints a second line with the
child's exit code. Run it as another user than the victim's (the tests use uid 1, daemon).
"""
import json
import subprocess
import sys
import urllib.error
import urllib.request


def post(path):
    try:
        with urllib.request.urlopen(urllib.request.Request(sys.argv[1] + path, method="POST")) as r:
            return [r.status, json.loads(r.read() or b"null")]
    except urllib.error.HTTPError as e:
        return [e.code, json.loads(e.read() or b"null")]


grant = post("/schedule?durationSeconds=3")[1]
token = grant["allowToken"]
own = subprocess.Popen(["sleep", "300"])
print(json.dumps({
    "lease": grant.get("leaseId"),
    "victim": post(f"/allow?allowToken={token}&pid={sys.argv[2]}"),
    "own": post(f"/allow?allowToken={token}&pid={own.pid}"),
}), flush=True)
own.wait()
print(json.dumps({"own_exit": own.returncode}), flush=True)
