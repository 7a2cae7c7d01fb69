"""Prompt sets: parsers on the real data and on small files, strict errors, the shapes set,
the registry and its Hydra configs, and the sha256-checked download (never the network)."""
from __future__ import annotations

import collections
import inspect
import io
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from bench.prompts import PromptDownloadError, PromptFileError, PromptRecord, coco_image_id, load_prompts
from bench.prompts import coco, drawbench, fetch, parti
from bench.prompts.coco import read_coco_csv, read_coco_json
from bench.prompts.drawbench import CATEGORY_COUNTS, read_drawbench
from bench.prompts.parti import read_parti
from bench.prompts.registry import PROMPT_SETS, read_prompt_file
from bench.prompts.shapes_set import CATEGORIES, shapes_prompts
from bench.shapes.scene import Scene, scene_caption

ROOT = Path(__file__).resolve().parents[1]
GIGGLE = ('"G I G G L E" painted in thick colorful lettering as graffiti on a faded red brick wall '
          'with a splotch of exploding white paint.')


@pytest.fixture(scope="module")
def real_data() -> Path:
    """The shared prompt data. BENCH_DATA_DIR is set by the Makefile and CI; when it is set
    the files must be there (a missing file fails, it is not skipped)."""
    if not os.environ.get("BENCH_DATA_DIR"):
        pytest.skip("BENCH_DATA_DIR is not set (make test sets it to ../shared/data)")
    d = Path(os.environ["BENCH_DATA_DIR"])
    for spec in (drawbench.DRAWBENCH_FILE, parti.PARTI_FILE, coco.COCO30K_FILE):
        assert (d / spec.name).is_file(), f"BENCH_DATA_DIR={d} lacks {spec.name}"
    return d


@pytest.fixture
def no_network(monkeypatch):
    """Only file:// URLs may be opened."""
    real = urllib.request.urlopen

    def guarded(url, *a, **k):
        assert str(url).startswith("file://"), f"test tried the network: {url}"
        return real(url, *a, **k)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    for name in fetch.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def assert_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, *words: str) -> None:
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert str(path) in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg and exc.value.line == line, msg
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------- real data

def test_drawbench_real_counts_and_exact_text(real_data):
    recs = read_drawbench(real_data / "drawbench.csv")
    assert len(recs) == 200
    assert dict(collections.Counter(r.category for r in recs)) == CATEGORY_COUNTS
    assert len(CATEGORY_COUNTS) == 11 and sum(CATEGORY_COUNTS.values()) == 200
    assert [r.id for r in recs] == [f"drawbench-{i:04d}" for i in range(1, 201)]
    texts = {r.text for r in recs}
    assert "Tcennis rpacket." in texts and "Acersecomicke." in texts          # misspellings kept
    assert any("Bismarck-Schönhausen" in t for t in texts)                    # UTF-8
    assert ("A stack of 3 plates. A blue plate is on the top, sitting on a blue plate. The blue plate is "
            "in the middle, sitting on a green plate. The green plate is on the bottom.") in texts
    assert "A storefront with 'Hello World' written on it." in texts
    assert recs[0] == PromptRecord("drawbench-0001", "A red colored car.", "Colors")


def test_parti_real_keeps_leading_quote(real_data):
    recs = read_parti(real_data / "partiprompts.tsv")
    assert len(recs) == 1632
    assert len({r.category for r in recs}) == 12
    assert collections.Counter(r.category for r in recs)["Animals"] == 314
    giggle = [r for r in recs if r.text == GIGGLE]
    assert len(giggle) == 1 and giggle[0].category == "Illustrations" and giggle[0].id == "parti-1561"
    raw = (real_data / "partiprompts.tsv").read_text(encoding="utf-8").split("\n")[1:-1]
    assert [r.text for r in recs] == [line.split("\t")[0] for line in raw]    # text kept exactly


def test_coco_csv_real(real_data):
    recs = read_coco_csv(real_data / "coco30k_esd.csv")
    assert len(recs) == 30000 and len({r.id for r in recs}) == 30000
    assert recs[0] == PromptRecord("coco-000000203564", "A bicycle replica with a clock as the front wheel.", "coco")
    assert coco_image_id(recs[0]) == 203564 and coco_image_id("coco-000000016977") == 16977
    assert all(re.fullmatch(r"coco-\d{12}", r.id) and r.category == "coco" for r in recs)
    assert load_prompts("coco", limit=3) == recs[:3]


def test_pinned_sha256_match_shared_files(real_data):
    for spec in (drawbench.DRAWBENCH_FILE, parti.PARTI_FILE, coco.COCO30K_FILE):
        assert fetch.sha256_file(real_data / spec.name) == spec.sha256, spec.name


# ---------------------------------------------------------------- small files

def test_drawbench_small_file_kept_exactly(tmp_path):
    p = write(tmp_path / "db.csv", 'prompt,category\n"A sign that says ""Hi, you"".",Text\n'
                                   'Dininrg tablez.,Misspellings\n"two\nlines",Reddit\n'
                                   'Café ☕ 東京,Rare Words\n')
    recs = read_drawbench(p)
    assert [r.text for r in recs] == ['A sign that says "Hi, you".', "Dininrg tablez.", "two\nlines",
                                      "Café ☕ 東京"]
    assert [r.category for r in recs] == ["Text", "Misspellings", "Reddit", "Rare Words"]
    assert [r.id for r in recs] == ["drawbench-0001", "drawbench-0002", "drawbench-0003", "drawbench-0004"]


def test_parti_small_file_quoting_off(tmp_path):
    p = write(tmp_path / "p.tsv", 'Prompt\tCategory\tChallenge\tNote\n'
                                  '"BUZZ" on a wall\tArtifacts\tWriting & Symbols\t\n'
                                  "a 'quoted' \"word\"\tAnimals\tBasic\tnote, with comma\n")
    recs = read_parti(p)
    assert [r.text for r in recs] == ['"BUZZ" on a wall', "a 'quoted' \"word\""]
    assert [r.category for r in recs] == ["Artifacts", "Animals"]
    assert recs[1].id == "parti-0002"


def test_coco_json_first_caption_by_annotation_id(tmp_path):
    doc = {"images": [{"id": 9}, {"id": 42}], "annotations": [
        {"image_id": 42, "id": 700, "caption": "second caption of 42"},
        {"image_id": 9, "id": 650, "caption": "A dog  sitting\nby a tv \n"},
        {"image_id": 42, "id": 500, "caption": "first caption of 42"},
        {"image_id": 9, "id": 900, "caption": "later caption of 9"},
    ]}
    p = write(tmp_path / "captions_val2014.json", json.dumps(doc))
    recs = read_coco_json(p)
    assert recs == [PromptRecord("coco-000000000042", "first caption of 42", "coco"),
                    PromptRecord("coco-000000000009", "A dog sitting by a tv", "coco")]
    assert load_prompts("coco", path=str(p), limit=1) == recs[:1]
    assert [coco_image_id(r) for r in recs] == [42, 9]


def test_coco_csv_small_and_duplicate_image(tmp_path):
    p = write(tmp_path / "c.csv", 'image_id,caption,evaluation_seed\n7,"A cat, on a mat.",1\n8,A dog.,2\n')
    assert [(r.id, r.text) for r in read_coco_csv(p)] == [("coco-000000000007", "A cat, on a mat."),
                                                          ("coco-000000000008", "A dog.")]
    dup = write(tmp_path / "dup.csv", "image_id,caption\n7,a\n8,b\n7,c\n")
    with pytest.raises(PromptFileError) as e:
        read_coco_csv(dup)
    assert_error(e, dup, 4, "duplicate", "coco-000000000007", "line 2")
    bad = write(tmp_path / "bad.csv", "image_id,caption\nx7,a\n")
    with pytest.raises(PromptFileError) as e:
        read_coco_csv(bad)
    assert_error(e, bad, 2, "image_id")


@pytest.mark.parametrize("text, line, words", [
    ('{"annotations": [\n{"image_id": 1, "id": 1, "caption": "a"},\n]}', 3, ["invalid JSON"]),
    ('{"images": []}', None, ["annotations"]),
    ('{"annotations": [{"image_id": 1, "id": 1, "caption": " "}]}', None, ["annotations[0]", "empty caption"]),
    ('{"annotations": [{"image_id": 1, "caption": "a"}]}', None, ["annotations[0]", "id, image_id, caption"]),
    ('{"annotations": [{"image_id": 1, "id": 3, "caption": "a"}, {"image_id": 2, "id": 3, "caption": "b"}]}',
     None, ["annotations[1]", "duplicate annotation id 3"]),
])
def test_coco_json_errors(tmp_path, text, line, words):
    p = write(tmp_path / "captions.json", text)
    with pytest.raises(PromptFileError) as e:
        read_coco_json(p)
    assert_error(e, p, line, *words)


def test_user_files(tmp_path):
    txt = write(tmp_path / "mine.txt", "a red cube\r\nÜber-cat, \"quoted\"\n  leading space kept\n")
    assert read_prompt_file(txt) == [PromptRecord("user-0001", "a red cube", "user"),
                                     PromptRecord("user-0002", 'Über-cat, "quoted"', "user"),
                                     PromptRecord("user-0003", "  leading space kept", "user")]
    csv_plain = write(tmp_path / "plain.csv", "prompt\nA cat.\n")
    assert read_prompt_file(csv_plain) == [PromptRecord("user-0001", "A cat.", "user")]
    csv_full = write(tmp_path / "full.csv", "id,Prompt,Category\nmy-cat,A cat.,Animals\nmy_dog.v2,A dog.,Animals\n")
    assert [(r.id, r.category) for r in read_prompt_file(csv_full)] == [("my-cat", "Animals"), ("my_dog.v2", "Animals")]
    tsv = write(tmp_path / "mine.tsv", 'Prompt\tCategory\n"GIGGLE" sign\tText\n')
    assert read_prompt_file(tsv) == [PromptRecord("user-0001", '"GIGGLE" sign', "Text")]
    assert load_prompts("file", path=str(txt), limit=2) == read_prompt_file(txt)[:2]


# ---------------------------------------------------------------- errors

def _bad_files(tmp_path: Path):
    """(reader, path, line, words) for each error kind."""
    cases = [
        (read_drawbench, tmp_path / "absent.csv", None, ["file not found"]),
        (read_drawbench, write(tmp_path / "nocat.csv", "prompt,kind\na,b\n"), 1, ["missing column", "'category'"]),
        (read_parti, write(tmp_path / "noprompt.tsv", "Text\tCategory\na\tb\n"), 1, ["missing column", "'prompt'"]),
        (read_drawbench, write(tmp_path / "empty_prompt.csv", "prompt,category\na,Colors\n  ,Colors\n"), 3,
         ["empty prompt"]),
        (read_parti, write(tmp_path / "empty_prompt.tsv", "Prompt\tCategory\tChallenge\tNote\n\tAnimals\tBasic\t\n"),
         2, ["empty prompt"]),
        (read_drawbench, write(tmp_path / "blank.csv", "prompt,category\na,Colors\n\nb,Colors\n"), 3, ["empty line"]),
        (read_drawbench, write(tmp_path / "comma.csv", "prompt,category\nA cat, a dog,Colors\n"), 2,
         ["expected 2 fields", "got 3"]),
        (read_drawbench, write(tmp_path / "emptyfile.csv", ""), 1, ["empty file"]),
        (read_prompt_file, write(tmp_path / "blank.txt", "a cat\n\na dog\n"), 2, ["empty prompt"]),
        (read_prompt_file, write(tmp_path / "dup.csv", "prompt,id\na,x-1\nb,x-2\nc,x-1\n"), 4,
         ["duplicate prompt id 'x-1'", "first on line 2"]),
        (read_prompt_file, write(tmp_path / "unsafe.csv", "prompt,id\na,../evil\n"), 2, ["not file-name safe"]),
        (read_prompt_file, write(tmp_path / "prompts.json", "[]"), None, ["unknown prompt file type"]),
    ]
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("prompt,category\nok,Colors\nCafé,Colors\n".encode("latin-1"))
    cases.append((read_drawbench, latin1, 3, ["not valid UTF-8"]))
    latin1_txt = tmp_path / "latin1.txt"
    latin1_txt.write_bytes("a\nb\nna\xefve\n".encode("latin-1"))
    cases.append((read_prompt_file, latin1_txt, 3, ["not valid UTF-8"]))
    return cases


def test_bad_files_raise_prompt_file_error(tmp_path):
    cases = _bad_files(tmp_path)
    assert len(cases) == 14
    for reader, path, line, words in cases:
        with pytest.raises(PromptFileError) as e:
            reader(path)
        assert_error(e, path, line, *words)


# ---------------------------------------------------------------- shapes

def test_shapes_deterministic_prefix_stable_balanced():
    a, b = shapes_prompts(31, seed=3), shapes_prompts(31, seed=3)
    assert a == b
    assert shapes_prompts(10, seed=3) == a[:10]
    assert shapes_prompts(31, seed=4) != a
    assert [r.category for r in a[:6]] == list(CATEGORIES) * 2
    assert collections.Counter(r.category for r in a) == {"Colors": 11, "Counting": 10, "Positional": 10}
    assert [r.id for r in a[:2]] == ["shapes-0001", "shapes-0002"] and len({r.id for r in a}) == 31
    assert shapes_prompts(0) == []
    with pytest.raises(ValueError):
        shapes_prompts(-1)


def test_shapes_truth_round_trips():
    for rec in shapes_prompts(12, seed=0):
        scene = Scene.from_json(rec.truth, rec.text)
        assert scene.to_json() == rec.truth
        assert scene_caption(scene) == rec.text and scene.category == rec.category


# ---------------------------------------------------------------- registry and configs

def test_load_prompts_limit_and_categories(tmp_path):
    p = write(tmp_path / "set.csv", "prompt,category\na,X\nb,Y\nc,X\nd,Y\ne,X\n")
    assert [r.text for r in load_prompts("file", path=str(p))] == list("abcde")
    assert [r.text for r in load_prompts("file", path=str(p), limit=2)] == ["a", "b"]
    assert [r.text for r in load_prompts("file", path=str(p), categories=["X"], limit=2)] == ["a", "c"]
    assert [r.text for r in load_prompts("file", path=str(p), limit=99)] == list("abcde")
    assert load_prompts("shapes", n=9, limit=4) == shapes_prompts(4)
    assert [r.category for r in load_prompts("shapes", n=9, categories=["Counting"])] == ["Counting"] * 3
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="limit"):
            load_prompts("shapes", n=3, limit=bad)
    with pytest.raises(ValueError, match="'Z'"):
        load_prompts("file", path=str(p), categories=["Z"])
    with pytest.raises(ValueError, match="prompts.path"):
        load_prompts("file")
    with pytest.raises(ValueError, match="shapes"):
        load_prompts("shapes", path=str(p))
    with pytest.raises(ValueError, match="unknown prompt set"):
        load_prompts("laion")  # type: ignore[arg-type]


def test_hydra_prompt_configs_compose_and_load(tmp_path, monkeypatch):
    from conftest import compose_config

    user = write(tmp_path / "mine.txt", "a cat\na dog\n")
    data = tmp_path / "data"
    data.mkdir()
    write(data / "drawbench.csv", "prompt,category\nA red car.,Colors\n")
    write(data / "partiprompts.tsv", "Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\n")
    write(data / "coco30k_esd.csv", "image_id,caption,evaluation_seed\n5,A cat.,1\n")
    monkeypatch.setenv("BENCH_DATA_DIR", str(data))
    kwargs = set(inspect.signature(load_prompts).parameters)
    expected = {"shapes": 4, "drawbench": 1, "coco": 1, "parti": 1, "file": 2}
    for name in PROMPT_SETS:
        overrides = [f"+prompts={name}"] + (["prompts.n=4"] if name == "shapes" else [])  # n: shapes only
        if name == "file":
            overrides.append(f"prompts.path={user}")
        cfg = compose_config(None, overrides)
        own = kwargs if name == "shapes" else kwargs - {"n", "seed"}  # n, seed: the generated shapes set's only
        assert set(cfg.prompts) == own and cfg.prompts.name == name
        assert cfg.prompts.download is False and cfg.prompts.limit is None
        recs = load_prompts(**cfg.prompts)
        assert len(recs) == expected[name], name
    cfg = compose_config(None, ["+prompts=shapes", "prompts.limit=2", "prompts.seed=5"])
    assert load_prompts(**cfg.prompts) == shapes_prompts(2, seed=5)


# ---------------------------------------------------------------- data location and download

def _origin_drawbench(text: str) -> bytes:
    """The public mirror's layout of drawbench.csv: header Prompts,Category, a trailing space
    after 'Gary Marcus et al.', no final newline."""
    return (text.replace("prompt,category\n", "Prompts,Category\n", 1)
            .replace(",Gary Marcus et al.\n", ",Gary Marcus et al. \n").rstrip("\n").encode("utf-8"))


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert fetch.data_dir() == tmp_path
    monkeypatch.delenv("BENCH_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fetch.data_dir() == tmp_path / "cache" / "imagen-bench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fetch.data_dir() == Path.home() / ".cache" / "imagen-bench" / "data"


def test_missing_file_says_where_to_put_it(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(PromptFileError) as e:
        load_prompts("drawbench")
    assert_error(e, tmp_path / "drawbench.csv", None, "BENCH_DATA_DIR", "prompts.download=true",
                 drawbench.DRAWBENCH_FILE.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PromptDownloadError) as e:
        load_prompts("parti", download=True)
    assert_error(e, tmp_path / "partiprompts.tsv", None, "HF_HUB_OFFLINE=1", "BENCH_DATA_DIR")
    assert not (tmp_path / "partiprompts.tsv").exists()


def test_download_normalizes_and_checks_sha(monkeypatch, tmp_path, no_network):
    text = "prompt,category\nA red colored car.,Colors\nPaying for a pizza.,Gary Marcus et al.\n"
    origin = write(tmp_path / "DrawBench.csv", _origin_drawbench(text).decode())
    assert origin.read_bytes().startswith(b"Prompts,Category\n") and origin.read_bytes().endswith(b". ")
    spec = replace(drawbench.DRAWBENCH_FILE, url=origin.as_uri(), sha256=fetch.sha256_bytes(text.encode()))
    data = tmp_path / "data"
    monkeypatch.setattr(drawbench, "DRAWBENCH_FILE", spec)
    monkeypatch.setenv("BENCH_DATA_DIR", str(data))
    recs = load_prompts("drawbench", download=True)
    assert (data / "drawbench.csv").read_text(encoding="utf-8") == text
    assert [r.category for r in recs] == ["Colors", "Gary Marcus et al."]
    # a present file is used as it is, without a download
    monkeypatch.setattr(drawbench, "DRAWBENCH_FILE", replace(spec, url="file:///nonexistent/x.csv"))
    assert load_prompts("drawbench", download=True) == recs

    # a sha mismatch fails, names both hashes and where to put a correct copy, writes nothing
    bad = replace(spec, sha256="0" * 64)
    with pytest.raises(PromptDownloadError) as e:
        fetch.download_data_file(bad, tmp_path / "other")
    assert_error(e, tmp_path / "other" / "drawbench.csv", None, "sha256 mismatch", "0" * 64, spec.sha256,
                 "BENCH_DATA_DIR")
    assert not (tmp_path / "other").exists()


def test_download_real_origin_layouts(monkeypatch, tmp_path, real_data, no_network):
    """The pinned sha256 holds for the origin layouts of DrawBench (mirror) and Parti (byte-exact)."""
    db = write(tmp_path / "DrawBench.csv",
               _origin_drawbench((real_data / "drawbench.csv").read_text(encoding="utf-8")).decode())
    out = fetch.download_data_file(replace(drawbench.DRAWBENCH_FILE, url=db.as_uri()), tmp_path / "d")
    assert fetch.sha256_file(out) == drawbench.DRAWBENCH_FILE.sha256
    assert len(read_drawbench(out)) == 200
    pt = fetch.download_data_file(replace(parti.PARTI_FILE, url=(real_data / "partiprompts.tsv").as_uri()),
                                  tmp_path / "d")
    assert pt.read_bytes() == (real_data / "partiprompts.tsv").read_bytes()


def test_coco_origin_layout_normalizes_to_project_rows(real_data):
    origin = ('image_id,source,prompt,evaluation_seed\n'
              '000000203564,coco-30k,A bicycle replica with a clock as the front wheel.,41337\n'
              '000000571635,coco-30k,"A bathroom with a toilet, sink, and shower.",10030\n'
              '000000202658,coco-30k,An old toilet with a hello kitty cover top. ,97789\n'
              '000000554037,coco-30k,"a counter with vegetables, knife and cutting board on it. ",83202\n'
              '000000482917,coco-30k,"A dog sitting between its masters feet on a footstool watching tv\n",64297\n')
    got = coco.from_origin(origin.encode()).decode().split("\n")
    project = (real_data / "coco30k_esd.csv").read_text(encoding="utf-8").split("\n")
    by_id = {line.split(",", 1)[0]: line for line in project[1:] if line}
    assert got[0] == project[0] == "image_id,caption,evaluation_seed"
    assert got[1:-1] == [by_id[i] for i in ("203564", "571635", "202658", "554037", "482917")]
    assert got[-1] == ""


def test_download_network_failure_is_clear(monkeypatch, tmp_path):
    def refuse(url, *a, **k):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(PromptDownloadError) as e:
        fetch.download_data_file(coco.COCO30K_FILE, tmp_path, opener=refuse)
    assert_error(e, tmp_path / "coco30k_esd.csv", None, "could not download", "no route to host",
                 "BENCH_DATA_DIR", coco.COCO30K_FILE.url)

    class Body(io.BytesIO):
        pass

    with pytest.raises(PromptDownloadError) as e:   # an HTML error page instead of the CSV
        fetch.download_data_file(drawbench.DRAWBENCH_FILE, tmp_path, opener=lambda url, **k: Body(b"<html>"))
    assert_error(e, tmp_path / "drawbench.csv", None, "not in the expected origin format")
    assert not (tmp_path / "drawbench.csv").exists()
