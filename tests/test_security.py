"""Security: no unpickling anywhere, file names from prompt ids only and always inside the run
directory, and every HTML output escapes hostile prompt text (report page and rating page)."""
from __future__ import annotations

import ast
import json
import os
import pickle
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.prompts.errors import PromptFileError
from bench.prompts.records import PromptRecord
from bench.prompts.registry import read_prompt_file
from bench.run import run
from conftest import resolved  # the shared Hydra compose helper; tests/ is on sys.path (not a package)

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "results", "outputs", "multirun", "node_modules", "__pycache__", "build", "dist"}
WEIGHT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".joblib"}
HOSTILE = [
    "../../etc/passwd",
    "/tmp/evil a red circle",
    '<script>alert("x")</script> two blue squares',
    '"><img src=x onerror=alert(1)> a green triangle',
    "</script><script>alert(2)</script> & more",
    "javascript:alert(3) {{7*7}} ${oc.env:HOME} \\..\\..\\windows",
]


# ---------------------------------------------------------------- deserialisation

def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Calls that unpickle: torch.load without weights_only=True, pickle/dill/joblib loads, np.load with
    allow_pickle=True, yaml.load without an explicit Loader (yaml.safe_load is fine)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name, kw = node.func.attr, {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}: {owner}.{name}"

        def const(key: str) -> object:
            v = kw.get(key)
            return v.value if isinstance(v, ast.Constant) else None

        if owner == "torch" and name == "load" and const("weights_only") is not True:
            found.append(where + " without weights_only=True")
        elif owner in ("pickle", "cPickle", "dill", "joblib", "_pickle") and name in ("load", "loads", "Unpickler"):
            found.append(where)
        elif owner in ("np", "numpy") and name == "load" and const("allow_pickle") is not False \
                and "allow_pickle" in kw:
            found.append(where + " with allow_pickle")
        elif owner == "yaml" and name in ("load", "unsafe_load", "full_load") and "Loader" not in kw:
            found.append(where + " (use yaml.safe_load)")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = ("import torch, pickle, numpy as np, yaml\n"
           "torch.load('a.pt')\ntorch.load('a.pt', weights_only=False)\npickle.load(open('x','rb'))\n"
           "pickle.loads(b'')\nnp.load('x.npz', allow_pickle=True)\nyaml.load(open('c'))\n")
    assert len(unsafe_calls(bad)) == 6
    good = "import torch, numpy as np, yaml\ntorch.load('a', weights_only=True)\nnp.load('x')\nyaml.safe_load('')\n"
    assert unsafe_calls(good) == []


def _source_files(root: Path, exclude_tests: bool) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        if exclude_tests and rel.parts[:1] == ("tests",):
            continue
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return out


def test_no_unpickling_in_the_source_tree():
    files = _source_files(REPO, exclude_tests=True)
    assert any(f.name == "checkpoint.py" for f in files) and len(files) > 20
    found = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))]
    assert found == [], "unsafe deserialisation:\n" + "\n".join(found)


def test_shipped_weights_are_safetensors_only():
    weights = [p for p in (REPO / "checkpoints").rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    assert weights == []
    assert list((REPO / "checkpoints").rglob("*.safetensors"))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_dressed_as_a_checkpoint_is_refused_unexecuted(tmp_path):
    from imagen.cascade import Cascade, StageConfig
    from imagen.checkpoint import CheckpointError
    from imagen.text_encoder import TextEncoderConfig

    marker = tmp_path / "pwned"
    evil = tmp_path / "ema.safetensors"
    torch.save({"weights": _Evil(marker)}, evil)  # torch.save pickles
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Cascade.load([StageConfig("base", {}, str(evil))], TextEncoderConfig(), device="cpu")
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(CheckpointError):
        Cascade.load([StageConfig("base", {}, str(raw))], TextEncoderConfig(), device="cpu")
    assert not marker.exists()


def test_reference_stats_with_pickled_objects_are_refused_unexecuted(tmp_path):
    from bench.metrics.refstats import npz_refstats

    marker = tmp_path / "pwned"
    path = tmp_path / "refstats.npz"
    np.savez(path, mu=np.array([_Evil(marker)], dtype=object), sigma=np.eye(2))

    class Ext:
        name, resize, dim = "x", "none", 2

    with pytest.raises(ValueError, match="allow_pickle"):
        npz_refstats(path, Ext())
    assert not marker.exists()


# ---------------------------------------------------------------- file names

@pytest.mark.parametrize("pid", ["../x", "a/../../b", "..", "/etc/passwd", "a/b", "a\\b", "", ".hidden", "x..y",
                                 "~root", "a b", "x" * 200, "nul\x00"])
def test_unsafe_prompt_ids_are_rejected(pid):
    with pytest.raises(ValueError, match="not file-name safe"):
        PromptRecord(pid, "a red circle", "user")


def test_prompt_file_with_a_traversal_id_is_rejected_at_its_line(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt,id\na red circle,ok-1\na blue square,../../etc/passwd\n")
    with pytest.raises(PromptFileError, match=re.escape(f"{f}:3: prompt id '../../etc/passwd' is not file-name safe")):
        read_prompt_file(f)


def _config(overrides: list[str]) -> dict:
    return resolved("config", overrides)


@pytest.fixture(scope="module")
def hostile_runs(tiny_checkpoints, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two tiny runs (seeds 0 and 1) of hostile prompts, in a folder that holds nothing else."""
    root = tmp_path_factory.mktemp("hostile")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(HOSTILE) + "\n", encoding="utf-8")
    runs = []
    for seed in (0, 1):
        run_dir = root / f"run{seed}_<b>x&\"'"
        cfg = _config(["model=imagen_tiny", f"model.stages.0.checkpoint={tiny_checkpoints['base']}",
                       f"model.stages.1.checkpoint={tiny_checkpoints['sr']}", "prompts=file",
                       f"prompts.path={prompts}", "guidance.weights=[3]", "sampler.steps=2", "sampler.sr_steps=2",
                       "sampler.micro_batch=2", "metrics=none", "device=cpu", "threads=1", f"seed={seed}"])
        run(cfg, run_dir)
        runs.append(run_dir)
    return root, runs[0], runs[1]


def test_prompt_text_never_names_a_file_and_nothing_leaves_the_run_dir(hostile_runs):
    root, a, b = hostile_runs
    outside = [p for p in root.rglob("*") if not (p.is_relative_to(a) or p.is_relative_to(b))]
    assert outside == [root / "prompts.txt"]
    assert not Path("/tmp/evil a red circle").exists()
    safe = re.compile(r"^[A-Za-z0-9._/-]+$")  # file names from ids, weights and fixed names only
    for run_dir in (a, b):
        for p in run_dir.rglob("*"):
            rel = str(p.relative_to(run_dir))
            assert safe.match(rel) and "passwd" not in rel and "evil" not in rel, rel
        import pandas as pd

        man = pd.read_csv(run_dir / "manifest.csv", keep_default_na=False)
        assert man["prompt"].tolist() == HOSTILE  # kept exactly, as data
        assert man["path"].tolist() == [f"images/w3/user-{i:04d}_s0.png" for i in range(1, len(HOSTILE) + 1)]
    cache = Path(os.environ["IMAGEN_BENCH_CACHE"])
    assert not [p for p in cache.rglob("*") if "passwd" in p.name or "evil" in p.name or "<" in p.name]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        (self.script_text if self._in_script else self.text).append(data)


def _parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    page.close()
    return page


def _handlers(page: _Page) -> list[str]:
    return [f"{t} {k}={v}" for t, attrs in page.tags for k, v in attrs
            if k.startswith("on") or (v or "").strip().lower().startswith("javascript:")]


def test_report_html_shows_hostile_prompts_as_text_only(hostile_runs):
    _, a, _ = hostile_runs
    html_text = (a / "report.html").read_text(encoding="utf-8")
    page = _parse(html_text)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "svg", "textarea", "base")]
    assert _handlers(page) == []
    text = "".join(page.text)
    for prompt in HOSTILE:
        assert " ".join(prompt.split()) in text, prompt  # shown, as text
    assert a.name in text  # the run directory's name too, escaped
    for raw in ("<script>alert", "<img src=x", "<b>x"):
        assert raw not in html_text


def test_rating_page_embeds_hostile_prompts_as_data_only(hostile_runs, tmp_path):
    from bench.pairs import TEMPLATE, export_pairs

    _, a, b = hostile_runs
    out = tmp_path / "rating"
    export_pairs(a, b, out, k=1, seed=0)
    html_text = (out / "index.html").read_text(encoding="utf-8")
    page, template = _parse(html_text), _parse(TEMPLATE.read_text(encoding="utf-8"))
    assert [t for t, _ in page.tags] == [t for t, _ in template.tags]  # no element added by the data
    assert _handlers(page) == _handlers(template)
    m = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', html_text, re.S)
    assert m and "<" not in m.group(1)
    data = json.loads(m.group(1))
    assert sorted(p["prompt"] for p in data["pairs"]) == sorted(HOSTILE)
    assert all(re.fullmatch(r"img/[0-9a-f]+\.png", src) for p in data["pairs"] for src in p["left"] + p["right"])
    assert {"img", "index.html", "pairs.csv", "key.csv"} <= {p.name for p in out.iterdir()}
