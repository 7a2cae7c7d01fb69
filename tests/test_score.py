"""bench.score: a folder of images made elsewhere -> a scored run directory that the other commands accept.

Inputs are built here with the shapes renderer; the metrics use the stand-in shapes-CLIP of metrics_support
and a small reference, so nothing slow runs."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import metrics_support as S  # shared stand-ins; tests/ is on sys.path (not a package)
from bench import rundir
from bench.metrics.score_run import COLUMNS
from bench.pairs import export_pairs
from bench.prompts.shapes_set import shapes_prompts
from bench.regress import compare, failures, make_baseline
from bench.score import UNNAMED_WEIGHT, FolderError, score_folder
from bench.shapes import render
from bench.shapes.scene import Scene
from conftest import resolved  # the shared Hydra compose helper

REPO = Path(__file__).resolve().parents[1]
N_PROMPTS = 6
PROMPTS = shapes_prompts(N_PROMPTS, 0)
METRICS = ["metrics.ref_n=60", "metrics.bootstrap=50", "metrics.fd_bootstrap=5", "metrics.kid_subsets=5",
           "metrics.batch_size=4", "metrics.device=cpu"]


def _cfg(images: Path, tmp: Path, *extra: str, metrics: bool = True) -> dict:
    """conf/score.yaml composed as the command line would."""
    scoring = [*METRICS, f"metrics.cache_dir={tmp / 'refcache'}"] if metrics else ["metrics=none"]
    over = [f"images={images}", "prompts=shapes", f"prompts.n={N_PROMPTS}", *scoring, *extra]
    return resolved("score", over)


def _render(i: int, size: int) -> Image.Image:
    p = PROMPTS[i]
    return render(Scene.from_json(p.truth, p.text), size)


def _write_manifest(folder: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


def manifest_folder(folder: Path, sizes=(64, 48)) -> Path:
    """The set's prompts rendered exactly (sizes alternate), one as a JPEG, plus one prompt outside the set."""
    (folder / "pics").mkdir(parents=True)
    rows = []
    for i in range(N_PROMPTS):
        name = f"pics/img{i}.jpg" if i == 3 else f"pics/img{i}.png"
        _render(i, sizes[i % len(sizes)]).save(folder / name, quality=95)
        rows.append({"path": name, "prompt": PROMPTS[i].text})
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / "odd.png")
    rows.append({"path": "odd.png", "prompt": "a watercolour of a lighthouse", "category": "Art"})
    _write_manifest(folder, rows, ["path", "prompt", "category"])
    return folder


def geneval_folder(folder: Path, n: int = 3, samples: int = 2) -> Path:
    for i in range(n):
        d = folder / f"{i:05d}"
        (d / "samples").mkdir(parents=True)
        (d / "metadata.jsonl").write_text(json.dumps({"tag": "shapes", "prompt": PROMPTS[i].text}) + "\n")
        for k in range(samples):
            _render(i, 48).save(d / "samples" / f"{k:04d}.png")
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (relative name -> sha256) and every folder (-> 'dir')."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Folder A (manifest, mixed sizes) scored into OUT A with the stand-in metrics; the stand-in stays
    installed for this module's tests."""
    tmp = tmp_path_factory.mktemp("score")
    with pytest.MonkeyPatch.context() as mp:
        S.install_stub_shapes_clip(mp)
        folder = manifest_folder(tmp / "folder_a")
        before = tree_digest(folder)
        out = tmp / "out_a"
        result = score_folder(_cfg(folder, tmp), out, overrides=[f"images={folder}", "prompts=shapes"])
        yield {"tmp": tmp, "folder": folder, "out": out, "result": result, "before": before}


def test_a_manifest_folder_becomes_a_scored_run_directory(scored):
    folder, out = scored["folder"], scored["out"]
    assert tree_digest(folder) == scored["before"]  # the source folder is only read
    for name in ("manifest.csv", "metrics.csv", "metrics.json", "image_scores.csv", "run_info.json",
                 "generation.json", "report.html", "report.md", "grid.png", "pareto.png", ".hydra/config.yaml"):
        assert (out / name).is_file(), name

    man = rundir.read_manifest(out)
    assert list(man.columns) == rundir.MANIFEST_COLUMNS + ["source"]
    assert len(man) == N_PROMPTS + 1
    for row in man.itertuples():  # copies, byte for byte, inside the run directory
        assert not Path(row.path).is_absolute()
        assert (out / row.path).read_bytes() == (folder / row.source).read_bytes()
        with Image.open(out / row.path) as im:
            assert (int(row.width), int(row.height)) == im.size
    assert man["path"].iloc[3].endswith("shapes-0004_s0.jpg")
    in_set = man.iloc[:N_PROMPTS]
    assert in_set["prompt_id"].tolist() == [p.id for p in PROMPTS]
    assert in_set["category"].tolist() == [p.category for p in PROMPTS]
    assert in_set["truth"].tolist() == [p.truth for p in PROMPTS]
    user = man.iloc[N_PROMPTS]
    assert (user.prompt_id, user.category, user.truth) == ("user-0001", "Art", "")
    assert set(man["guidance_weight"]) == {UNNAMED_WEIGHT}

    table = pd.read_csv(out / "metrics.csv")
    assert list(table.columns) == COLUMNS
    assert table.loc[table.category == "all", "num_images"].tolist() == [N_PROMPTS + 1]
    assert set(table["category"]) == {"all", "Art", "Colors", "Counting", "Positional"}
    shapes_rows = table[table.category.isin(["Colors", "Counting", "Positional"])]
    assert shapes_rows["alignment"].eq(1.0).all()  # ground truth from the prompt set: exact alignment works
    assert table["clip_score"].notna().all()

    gen = json.loads((out / "generation.json").read_text())
    assert gen["generator.kind"] == "folder" and gen["source"] == str(folder) and len(gen["source_digest"]) == 64
    info = json.loads((out / "run_info.json").read_text())
    assert info["generator"]["kind"] == "folder" and info["generator"]["layout"] == "manifest"
    assert info["num_images"] == N_PROMPTS + 1 and info["source"] == str(folder)
    assert "torch" in info["versions"] and info["wall_time_s"]["total"] > 0
    assert "not given" in info["generator"]["guidance_weight"]


def test_mixed_sizes_are_scored_with_each_extractors_own_resize(scored):
    out = scored["out"]
    desc = json.loads((out / "metrics.json").read_text())
    mixed = desc["mixed_sizes"]
    assert mixed["sizes"] == {"64x64": 3, "48x48": 3, "56x40": 1} and mixed["reference_resolution"] == 64
    assert "own rule" in mixed["rule"]
    assert "64px" in pd.read_csv(out / "metrics.csv")["fd_reference"].iloc[0]
    # each image's CLIP score is the stand-in's on that image alone, at its own size (rows in manifest order)
    stub = S.StubShapesClip()
    man = rundir.read_manifest(out)
    scores = pd.read_csv(out / "image_scores.csv")["clip_score"].to_numpy()
    for i, row in enumerate(man.itertuples()):
        with Image.open(out / row.path) as im:
            x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].contiguous()
        cos = float((stub.image_features(x) @ stub.text_features([row.prompt]).T).item())
        assert scores[i] == pytest.approx(max(100 * cos, 0.0), abs=1e-3)


def test_rescoring_the_same_folder_is_allowed_another_folder_refused(scored):
    folder, out, tmp = scored["folder"], scored["out"], scored["tmp"]
    first = pd.read_csv(out / "metrics.csv")
    again = score_folder(_cfg(folder, tmp), out)
    pd.testing.assert_frame_equal(again["metrics"].reset_index(drop=True), first, check_dtype=False)
    assert again["info"]["images_copied"] == 0 and again["info"]["images_resumed"] == N_PROMPTS + 1

    other = manifest_folder(tmp / "folder_other", sizes=(32,))
    man_before, other_before = (out / "manifest.csv").read_bytes(), tree_digest(other)
    with pytest.raises(rundir.RunConfigMismatch, match="source_digest"):
        score_folder(_cfg(other, tmp), out)
    assert (out / "manifest.csv").read_bytes() == man_before
    assert tree_digest(other) == other_before


def test_pairs_between_two_scored_folders(scored):
    tmp = scored["tmp"]
    folder_b = manifest_folder(tmp / "folder_b", sizes=(40,))
    out_b = tmp / "out_b"
    score_folder(_cfg(folder_b, tmp, metrics=False), out_b)
    ex = export_pairs(scored["out"], out_b, tmp / "pairs", k=1)
    assert ex.num_pairs == N_PROMPTS + 1
    assert ex.guidance_weight_a == ex.guidance_weight_b == UNNAMED_WEIGHT
    assert (tmp / "pairs" / "index.html").is_file()


def test_regress_accepts_a_scored_folder(scored):
    out = scored["out"]
    baseline = make_baseline(out)
    assert baseline["fingerprint"]["num_images"] == N_PROMPTS + 1
    assert baseline["fingerprint"]["generation"] == {}  # no sampler / guidance settings: nothing generated
    result = compare(out, baseline)
    assert len(result) and not failures(result)


def test_manifest_weights_sample_indices_and_own_prompt_ids(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = []
    for w in (1, 7.5):
        for k in range(2):  # the same prompt twice per weight: sample indices 0, 1 in order
            name = f"w{w}_{k}.png"
            _render(0, 32).save(folder / name)
            rows.append({"path": name, "prompt": PROMPTS[0].text, "guidance_weight": w, "prompt_id": "mine"})
    _render(1, 32).save(folder / "cat.png")
    rows.append({"path": "cat.png", "prompt": "a cat", "guidance_weight": 1, "prompt_id": "cat-1"})
    _write_manifest(folder, rows)
    result = score_folder(_cfg(folder, tmp_path, metrics=False), tmp_path / "out")
    man = rundir.read_manifest(tmp_path / "out")
    assert man["guidance_weight"].tolist() == [1.0, 1.0, 7.5, 7.5, 1.0]
    assert man["sample_index"].tolist() == ["0", "1", "0", "1", "0"]
    assert man["prompt_id"].tolist() == [PROMPTS[0].id] * 4 + ["cat-1"]  # the set's id wins for its prompts
    assert man["path"].tolist()[2] == f"images/w7.5/{PROMPTS[0].id}_s0.png"
    assert result["info"]["generator"]["guidance_weight"] == "from the folder's manifest"


def test_geneval_layout(tmp_path):
    folder = geneval_folder(tmp_path / "geneval", n=3, samples=2)
    (folder / "00001" / "grid.png").write_bytes(b"GenEval writes a grid here; it is not a sample")
    before = tree_digest(folder)
    out = tmp_path / "out"
    result = score_folder(_cfg(folder, tmp_path, metrics=False), out)
    assert tree_digest(folder) == before
    man = rundir.read_manifest(out)
    assert man["prompt_id"].tolist() == [p.id for p in PROMPTS[:3] for _ in range(2)]
    assert man["sample_index"].tolist() == ["0", "1"] * 3
    assert man["source"].tolist()[:2] == ["00000/samples/0000.png", "00000/samples/0001.png"]
    assert man["truth"].tolist()[0] == PROMPTS[0].truth
    assert result["info"]["generator"]["layout"] == "geneval"
    assert (out / "report.html").is_file() and (out / "grid.png").is_file()


def _bad(tmp: Path, case: str) -> tuple[Path, str]:
    """A broken folder and the file its error must name."""
    folder = tmp / "bad"
    if case == "empty folder":
        folder.mkdir()
        return folder, str(folder)
    if case.startswith("geneval"):
        geneval_folder(folder, n=2, samples=1)
        if case == "geneval index beyond the prompt set":
            (folder / f"{N_PROMPTS:05d}" / "samples").mkdir(parents=True)
            return folder, str(folder / f"{N_PROMPTS:05d}")
        (folder / "00001" / "metadata.jsonl").write_text(json.dumps({"prompt": "a photo of a dog"}) + "\n")
        return folder, str(folder / "00001" / "metadata.jsonl")
    manifest_folder(folder)
    rows = list(csv.DictReader(open(folder / "manifest.csv", encoding="utf-8")))
    if case == "missing image":
        (folder / "pics" / "img2.png").unlink()
        return folder, str(folder / "pics" / "img2.png")
    if case == "not an image":
        (folder / "pics" / "img1.png").write_text("not a picture")
        return folder, str(folder / "pics" / "img1.png")
    if case == "truncated image":
        data = (folder / "pics" / "img4.png").read_bytes()
        (folder / "pics" / "img4.png").write_bytes(data[: len(data) // 2])
        return folder, str(folder / "pics" / "img4.png")
    if case in ("no path column", "no prompt column"):
        drop = case.split()[1]
        _write_manifest(folder, [{k: v for k, v in r.items() if k != drop} for r in rows])
        return folder, str(folder / "manifest.csv")
    if case == "bad guidance_weight":
        rows[2]["guidance_weight"] = "high"
        _write_manifest(folder, rows)
        return folder, f"{folder / 'manifest.csv'}, line 4"
    if case == "duplicate sample":
        rows[1]["prompt"] = rows[0]["prompt"]
        for r in rows:
            r["sample_index"] = 0
        _write_manifest(folder, rows)
        return folder, f"{folder / 'manifest.csv'}, line 3"
    if case == "image outside the folder":
        rows[0]["path"] = "../elsewhere.png"
        _write_manifest(folder, rows)
        return folder, f"{folder / 'manifest.csv'}, line 2"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing image", "not an image", "truncated image", "no path column",
                                  "no prompt column", "empty folder", "geneval index beyond the prompt set",
                                  "geneval metadata of another prompt", "bad guidance_weight", "duplicate sample",
                                  "image outside the folder"])
def test_bad_input_is_refused_naming_the_file(tmp_path, case):
    folder, names = _bad(tmp_path, case)
    before = tree_digest(folder)
    with pytest.raises(FolderError) as err:
        score_folder(_cfg(folder, tmp_path, metrics=False), tmp_path / "out")
    assert names in str(err.value)
    assert {"not an image": "not an image", "truncated image": "truncated"}.get(case, "") in str(err.value)
    assert tree_digest(folder) == before
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_command_line_exits_2_naming_the_file_and_never_writes_the_folder(tmp_path):
    folder, names = _bad(tmp_path, "missing image")
    before = tree_digest(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    base = [sys.executable, "-m", "bench.score", f"images={folder}", "prompts=shapes", f"prompts.n={N_PROMPTS}",
            "metrics=none"]
    p = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert names in p.stderr and "missing" in p.stderr
    # a run directory inside the source folder is refused before Hydra writes anything there
    p = subprocess.run([*base, f"hydra.run.dir={folder / 'out'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "overlap" in p.stderr
    assert tree_digest(folder) == before
