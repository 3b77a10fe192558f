# mcp-code-executor: creates a new environment in its (empty, owned) volume, offline, with the
# image's own tools. argv: env_type prefix conda_root.
import subprocess
import sys

env_type, prefix, conda_root = sys.argv[1], sys.argv[2], sys.argv[3]
if env_type == "venv":
    argv = ["python3", "-m", "venv", prefix]
elif env_type == "venv-uv":
    argv = ["uv", "venv", "--allow-existing", "--python", "python3", prefix]
else:
    argv = [conda_root + "/bin/conda", "create", "-y", "-q", "--offline", "--clone", "base", "-p", prefix]
print("$ " + " ".join(argv), file=sys.stderr, flush=True)
sys.exit(subprocess.run(argv, stdout=sys.stderr).returncode)
