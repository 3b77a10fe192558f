# mcp-code-executor: reports, for each name in argv, whether it is installed, as a distribution
# name (python-dateutil) or an import name (dateutil). Nothing is imported. Prints a JSON list.
import importlib.metadata as md
import importlib.util
import json
import re
import sys


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


dists = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name:
        dists.setdefault(norm(name), d)
by_module = md.packages_distributions()
report = []
for name in sys.argv[1:]:
    entry = {"package": name, "installed": False}
    d = dists.get(norm(name))
    top = name.split(".")[0]
    if d is not None:
        entry.update(installed=True, found_as="distribution", distribution=d.metadata["Name"], version=d.version)
    elif top in by_module:
        dist = by_module[top][0]
        entry.update(installed=True, found_as="import", distribution=dist, version=md.version(dist))
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            entry.update(installed=True, found_as="module")  # standard library or a loose module
    report.append(entry)
print(json.dumps(report))
