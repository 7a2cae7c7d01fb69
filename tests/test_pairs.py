"""Export of DrawBench pairs for blinded side-by-side rating (bench.pairs)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from bench.pairs import PairsError, export_pairs, read_key, read_pairs, script_json

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script> & more"
PROMPTS = [
    ("drawbench-000", "A red colored car.", "Colors"),
    ("drawbench-001", "Three cats and two dogs.", "Counting"),
    ("drawbench-002", "A cube to the left of a sphere.", "Positional"),
    ("drawbench-003", 'A sign that says "Diffusion".', "Text"),
    ("drawbench-004", "Rbefraigerator.", "Misspellings"),
    ("drawbench-005", HOSTILE, "Reddit"),
    ("drawbench-006", BREAKOUT, "Reddit"),
]


def make_run(root: Path, name: str, prompts=PROMPTS, weights=(3.0,), samples: int = 4, tag: int = 0) -> Path:
    """A fake run directory: manifest.csv as in the run contract and small solid-colour PNGs
    (each carrying a PNG text chunk naming the run, which an export must not leak)."""
    run = root / name
    rows = []
    for w in weights:
        for p, (pid, text, cat) in enumerate(prompts):
            for s in range(samples):
                rel = f"images/w{w:g}/{pid}_s{s}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                color = ((tag * 97 + 13) % 256, (p * 31 + int(w * 7)) % 256, (s * 53 + tag * 11) % 256)
                info = PngImagePlugin.PngInfo()
                info.add_text("model", f"secret-{name}")
                Image.new("RGB", (8, 8), color).save(run / rel, pnginfo=info)
                rows.append({"path": rel, "prompt_id": pid, "prompt": text, "category": cat, "seed": 1000 + s,
                             "guidance_weight": w, "sample_index": s, "image_index": len(rows), "truth": "",
                             "width": 8, "height": 8})
    with open(run / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return run


def pixel_name(path: Path) -> str:
    img = Image.open(path).convert("RGB")
    return hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).hexdigest()[:24] + ".png"


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path, "modelA-run", tag=1), make_run(tmp_path, "modelB-run", tag=2)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_is_blinded(runs, tmp_path):
    a, b = runs
    out = tmp_path / "export"
    ex = export_pairs(a, b, out, k=3, seed=0)
    assert ex.num_pairs == len(PROMPTS) and ex.k == 3 and ex.guidance_weight_a == 3.0
    for name in ("pairs.csv", "key.csv", "mturk.csv", "index.html"):
        assert (out / name).is_file()
    pairs = read_csv(out / "pairs.csv")
    assert list(pairs[0]) == ["pair_id", "prompt_id", "prompt", "category", "left_images", "right_images", "export_id"]
    assert sorted(p["prompt_id"] for p in pairs) == sorted(p[0] for p in PROMPTS)
    assert all(len(p["left_images"].split()) == 3 == len(p["right_images"].split()) for p in pairs)
    # nothing a rater sees names a run: not the files, not the image names, not the PNG metadata
    for name in ("pairs.csv", "mturk.csv", "index.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert "modelA" not in text and "modelB" not in text and "secret" not in text
    imgs = sorted((out / "img").iterdir())
    assert len(imgs) == 2 * 3 * len(PROMPTS)
    for im in imgs:
        assert re.fullmatch(r"[0-9a-f]{24}\.png", im.name)
        assert b"secret" not in im.read_bytes()
        assert pixel_name(im) == im.name  # the name depends on the pixels only
    # the key is the only file naming the runs
    key = read_csv(out / "key.csv")
    assert {r["a_side"] for r in key} <= {"left", "right"}
    assert all(str(a.resolve()) in (r["left_run"], r["right_run"]) for r in key)


def test_key_unblinds_to_the_right_images(runs, tmp_path):
    a, b = runs
    out = tmp_path / "export"
    export_pairs(a, b, out, k=2, seed=3)
    key = read_key(out)
    for p in read_pairs(out):
        pid = p.prompt_id
        want_a = [pixel_name(a / f"images/w3/{pid}_s{s}.png") for s in range(2)]
        want_b = [pixel_name(b / f"images/w3/{pid}_s{s}.png") for s in range(2)]
        shown = {"left": [Path(x).name for x in p.left_images], "right": [Path(x).name for x in p.right_images]}
        a_side = key[p.pair_id].a_side
        b_side = "right" if a_side == "left" else "left"
        assert shown[a_side] == want_a and shown[b_side] == want_b
        assert key[p.pair_id].run_label("A") == f"{a.resolve()} (w=3)"


def test_same_seed_same_bytes_other_seed_other_sides(runs, tmp_path):
    a, b = runs
    export_pairs(a, b, tmp_path / "e1", seed=7)
    export_pairs(a, b, tmp_path / "e2", seed=7)
    export_pairs(a, b, tmp_path / "e3", seed=8)
    for name in ("pairs.csv", "key.csv", "mturk.csv", "index.html"):
        assert (tmp_path / "e1" / name).read_bytes() == (tmp_path / "e2" / name).read_bytes()
    k1, k3 = read_key(tmp_path / "e1"), read_key(tmp_path / "e3")
    sides1 = {r.prompt_id: r.a_side for r in k1.values()}
    sides3 = {r.prompt_id: r.a_side for r in k3.values()}
    order1 = [p.prompt_id for p in read_pairs(tmp_path / "e1")]
    order3 = [p.prompt_id for p in read_pairs(tmp_path / "e3")]
    assert sides1 != sides3 or order1 != order3
    assert read_pairs(tmp_path / "e1")[0].export_id != read_pairs(tmp_path / "e3")[0].export_id


def test_left_right_is_randomised_per_pair(tmp_path):
    prompts = [(f"p{i:03d}", f"prompt {i}", "Colors") for i in range(40)]
    a = make_run(tmp_path, "a", prompts, samples=1, tag=1)
    b = make_run(tmp_path, "b", prompts, samples=1, tag=2)
    export_pairs(a, b, tmp_path / "out", k=1, seed=0)
    sides = [r.a_side for r in read_key(tmp_path / "out").values()]
    assert 8 <= sides.count("left") <= 32  # both sides, roughly balanced
    order = [p.prompt_id for p in read_pairs(tmp_path / "out")]
    assert order != sorted(order)  # presentation order is shuffled too


def test_runs_with_different_prompts_fail(tmp_path):
    a = make_run(tmp_path, "a", tag=1)
    b = make_run(tmp_path, "b", PROMPTS[:-2], tag=2)
    with pytest.raises(PairsError, match=r"do not cover the same prompts.*2 prompt\(s\) of run A are missing "
                                         r"from run B: drawbench-005, drawbench-006"):
        export_pairs(a, b, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_too_few_images_fail(tmp_path):
    a = make_run(tmp_path, "a", tag=1, samples=4)
    b = make_run(tmp_path, "b", tag=2, samples=2)
    with pytest.raises(PairsError, match=r"k=3 .* fewer samples shared by both runs.*drawbench-000 \(2\)"):
        export_pairs(a, b, tmp_path / "out", k=3)
    export_pairs(a, b, tmp_path / "out", k=2)  # two shared samples are enough for k=2


def test_guidance_weight_selection(tmp_path):
    a = make_run(tmp_path, "a", weights=(1.0, 3.0), samples=1, tag=1)
    b = make_run(tmp_path, "b", weights=(5.0,), samples=1, tag=2)
    with pytest.raises(PairsError, match=r"several guidance weights \(1, 3\); choose one with guidance_weight_a=W"):
        export_pairs(a, b, tmp_path / "out", k=1)
    with pytest.raises(PairsError, match=r"guidance_weight_a=7: .*available: 1, 3"):
        export_pairs(a, b, tmp_path / "out", k=1, guidance_weight_a=7)
    ex = export_pairs(a, b, tmp_path / "out", k=1, guidance_weight_a=1)
    assert (ex.guidance_weight_a, ex.guidance_weight_b) == (1.0, 5.0)
    key = read_key(tmp_path / "out")
    assert next(iter(key.values())).run_label("A").endswith("(w=1)")
    # one run against itself at two weights
    ex = export_pairs(a, a, tmp_path / "self", k=1, guidance_weight_a=1, guidance_weight_b=3)
    assert ex.num_pairs == len(PROMPTS)


def test_rating_page_embeds_pairs_safely(runs, tmp_path):
    a, b = runs
    out = tmp_path / "export"
    ex = export_pairs(a, b, out, k=1)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "__PAIRS_JSON__" not in html
    assert "alert(2)" in html and "</script><script>alert(2)" not in html
    assert HOSTILE not in html  # only its escaped form is in the page
    assert "http://" not in html and "https://" not in html  # no network resources
    m = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', html, re.S)
    data = json.loads(m.group(1))
    assert data["export_id"] == ex.export_id
    by_prompt = {p["prompt"]: p for p in data["pairs"]}
    assert HOSTILE in by_prompt and BREAKOUT in by_prompt
    first = read_pairs(out)[0]
    assert data["pairs"][0] == {"pair_id": first.pair_id, "prompt": first.prompt,
                                "left": list(first.left_images), "right": list(first.right_images)}
    assert "<" not in script_json({"x": "</script>"}) and json.loads(script_json({"x": "</script>"})) == {"x": "</script>"}


def test_mturk_csv_has_urls(runs, tmp_path):
    a, b = runs
    out = tmp_path / "export"
    export_pairs(a, b, out, k=2, base_url="https://cdn.example.org/exp1")
    rows = read_csv(out / "mturk.csv")
    assert len(rows) == len(PROMPTS)
    assert list(rows[0]) == ["pair_id", "prompt", "left_image_1", "left_image_2", "right_image_1", "right_image_2"]
    pairs = {p.pair_id: p for p in read_pairs(out)}
    for r in rows:
        assert r["left_image_1"] == "https://cdn.example.org/exp1/" + pairs[r["pair_id"]].left_images[0]
        assert (out / r["right_image_2"].removeprefix("https://cdn.example.org/exp1/")).is_file()


def test_refuses_to_replace_a_different_export(runs, tmp_path):
    a, b = runs
    out = tmp_path / "export"
    export_pairs(a, b, out, k=2, seed=0)
    export_pairs(a, b, out, k=2, seed=0)  # the same export again is fine
    with pytest.raises(PairsError, match="already holds a different export"):
        export_pairs(a, b, out, k=1, seed=0)
    export_pairs(a, b, out, k=1, seed=0, overwrite=True)
    assert len(list((out / "img").iterdir())) == 2 * len(PROMPTS)  # images of the old export are gone


def test_manifest_errors_name_file_and_line(tmp_path):
    a = make_run(tmp_path, "a", tag=1)
    b = make_run(tmp_path, "b", tag=2)
    text = (b / "manifest.csv").read_text().splitlines()
    text[3] = text[3].replace(",3.0,", ",three,")
    (b / "manifest.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(PairsError, match=r"b/manifest.csv, line 4: guidance_weight 'three'"):
        export_pairs(a, b, tmp_path / "out")
    with pytest.raises(PairsError, match=r"nowhere/manifest.csv: not found"):
        export_pairs(a, tmp_path / "nowhere", tmp_path / "out")


def test_cli(runs, tmp_path):
    a, b = runs
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "bench.pairs", f"a={a}", f"b={b}", f"out={out}", "k=2", "seed=5"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(PROMPTS)} pairs (2 images per side" in r.stdout
    assert (out / "index.html").is_file() and (out / ".hydra" / "config.yaml").is_file()
    bad = make_run(tmp_path, "short", PROMPTS[:3], tag=3)
    r = subprocess.run([sys.executable, "-m", "bench.pairs", f"a={a}", f"b={bad}", f"out={tmp_path / 'bad'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "do not cover the same prompts" in r.stderr and "drawbench-003" in r.stderr
