"""The benchmark package (``benchmarks/``): importing its modules changes neither the environment nor
``sys.path``, its settings come from ``conf/``, and both documented command forms start.

Each check runs in a fresh interpreter from the repository root (``benchmarks`` is not an installed
package; ``python -m benchmarks.run`` finds it there)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(f"benchmarks.{p.stem}" for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")

# For each module: first import what it imports from outside the package (third-party libraries may set
# variables of their own when imported, e.g. torch's inductor cache directory), then snapshot os.environ
# and sys.path, import the module, and report what changed.
PROBE = r"""
import ast, importlib, json, os, sys
from pathlib import Path

changes = {}
for name in sys.argv[1:]:
    tree = ast.parse(Path(name.replace(".", "/") + ".py").read_text())
    for node in tree.body:
        deps = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for dep in deps:
            if dep.split(".")[0] not in ("benchmarks", "__future__"):
                importlib.import_module(dep)
    env, path = dict(os.environ), list(sys.path)
    importlib.import_module(name)
    changes[name] = {"env": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
                     "sys_path": path != sys.path}
print(json.dumps(changes))
"""


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_imports_change_no_environment_and_no_sys_path():
    assert "benchmarks.run" in MODULES and "benchmarks.common" in MODULES
    out = run_python("-c", PROBE, *MODULES)
    assert out.returncode == 0, out.stderr[-3000:]
    changes = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(changes) == set(MODULES)
    assert {m: c for m, c in changes.items() if c["env"] or c["sys_path"]} == {}


def test_settings_come_from_conf():
    sweep = yaml.safe_load((REPO / "conf" / "guidance" / "sweep.yaml").read_text())
    single = yaml.safe_load((REPO / "conf" / "guidance" / "single.yaml").read_text())
    code = ("import json; from benchmarks.common import guidance_settings as g; s = g(); "
            "print(json.dumps([s.weights, s.w, s.thresholding, s.percentile, s.sr_weight]))")
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    weights, w, thresholding, percentile, sr_weight = json.loads(out.stdout.strip().splitlines()[-1])
    assert weights == [float(x) for x in sweep["weights"]]
    assert [w] == [float(x) for x in single["weights"]]
    assert (thresholding, percentile, sr_weight) == (sweep["thresholding"], sweep["percentile"], sweep["sr_weight"])


def test_both_command_forms_start():
    for args in (["-m", "benchmarks.run", "--help"], ["benchmarks/run.py", "--help"],
                 ["benchmarks/profile_metrics.py", "--help"]):
        out = run_python(*args)
        assert out.returncode == 0, (args, out.stderr[-3000:])
        assert "usage:" in out.stdout
