# mcp-code-executor: runs an install plan made by the server. argv[1]: JSON
# {"steps": [{"argv": [...], "packages": [...], "via": "pip"}],
#  "fallback": {"<requirement>": [{"argv": [...], "via": "pip"}]},
#  "names": {"<requirement>": "<distribution name>"}}
# Installer output goes to stderr; the last stdout line is the JSON report.
import importlib
import importlib.metadata as md
import json
import subprocess
import sys

plan = json.loads(sys.argv[1])


def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def run(argv):
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    try:
        return subprocess.run(argv, stdout=sys.stderr, stdin=subprocess.DEVNULL).returncode
    except OSError as e:
        print("cannot start %s: %s" % (argv[0], e), file=sys.stderr, flush=True)
        return 127


names = plan["names"]
before = {req: version(name) for req, name in names.items()}
via = {}
for step in plan["steps"]:
    if run(step["argv"]) == 0:
        for req in step["packages"]:
            via[req] = step["via"]
for req, attempts in plan["fallback"].items():
    if req in via:
        continue
    for attempt in attempts:
        if run(attempt["argv"]) == 0:
            via[req] = attempt["via"]
            break
importlib.invalidate_caches()
after = {req: version(name) for req, name in names.items()}
print(json.dumps({"before": before, "after": after, "via": via}))
