"""Per-run plots and report on small fake run directories: files are valid, empties are skipped,
every string is escaped, and the grid shows the run's own images."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.report import Curve, category_rows, draw_pareto, write_run_outputs
from bench.rundir import read_metrics
from bench.report.report import md_escape

HOSTILE = '<script>alert("x")</script> a red circle | $x^2$ `tick` & <b>bold</b>'
WEIGHTS = (1.0, 3.0, 7.0)
CATS = ("Colors", "Counting", "Positional")
COLORS = {1.0: (200, 30, 30), 3.0: (30, 200, 30), 7.0: (30, 30, 200)}  # one solid colour per w
SIZE = 16


def make_fake_run(run: Path, *, fd_empty_at: tuple[float, ...] = (7.0,), metrics: bool = True,
                  fd: bool = True) -> Path:
    """A run directory as bench.run writes it: images, manifest, metrics, .hydra, run_info.json."""
    rows = []
    prompts = [(f"shapes-{i:04d}", HOSTILE if i == 0 else f"two blue squares {i}", CATS[i % 3]) for i in range(4)]
    for w in WEIGHTS:
        for i, (pid, text, cat) in enumerate(prompts):
            rel = f"images/w{w:g}/{pid}_s0.png"
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((SIZE, SIZE, 3), COLORS[w], np.uint8)).save(run / rel)
            rows.append(dict(path=rel, prompt_id=pid, prompt=text, category=cat, seed=1000 + i, guidance_weight=w,
                             sample_index=0, image_index=len(rows), truth="", width=SIZE, height=SIZE))
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    if metrics:
        m = []
        for k, w in enumerate(WEIGHTS):
            for cat in ("all",) + CATS:
                no_fd = (not fd) or w in fd_empty_at
                m.append(dict(guidance_weight=w, category=cat, num_images=4 if cat == "all" else 2,
                              fd=np.nan if no_fd else 30.0 - 5 * k, fd_ci_low=np.nan if no_fd else 27.0 - 5 * k,
                              fd_ci_high=np.nan if no_fd else 33.0 - 5 * k, fd_real=np.nan if no_fd else 4.0,
                              fd_extractor="" if no_fd else "shapes-clip-v1/fd",
                              kid=np.nan, kid_std=np.nan, cmmd=np.nan, cmmd_model="",
                              clip_score=20.0 + 2 * k, clip_score_ci_low=19.0 + 2 * k, clip_score_ci_high=21.0 + 2 * k,
                              clip_model="shapes-clip-v1",
                              alignment=np.nan if cat == "Positional" else 0.2 + 0.2 * k,
                              alignment_ci_low=np.nan if cat == "Positional" else 0.1 + 0.2 * k,
                              alignment_ci_high=np.nan if cat == "Positional" else 0.3 + 0.2 * k))
        pd.DataFrame(m).to_csv(run / "metrics.csv", index=False)
        (run / "metrics.json").write_text(json.dumps({"definitions": {"fd": "Frechet <distance>"}}))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(
        "model:\n  name: imagen_tiny\nguidance:\n  weights: [1, 3, 7]\n  thresholding: dynamic\n"
        "prompts:\n  name: shapes\n  limit: 4\nsampler:\n  kind: ddim\n  steps: 2\n  sr_steps: 2\nseed: 0\n"
        "samples_per_prompt: 1\n")
    (run / ".hydra" / "overrides.yaml").write_text("- model=imagen_tiny\n")
    info = {"versions": {"torch": "9.9-test"}, "git_revision": "abc123def", "command": "python -m bench.run",
            "seed": 0, "num_prompts": 4, "num_images": 12, "random_weights": True, "images_generated": 12,
            "images_resumed": 0, "wall_time_s": {"generation": 1.5, "metrics": 0.5, "total": 2.25},
            "peak_memory_mib": 777.0, "stages": [{"kind": "base", "checkpoint": None, "random_init": True,
                                                  "sha256": None, "train_steps": None, "image_size": 16}]}
    (run / "run_info.json").write_text(json.dumps(info))
    return run


class _TagChecker(HTMLParser):
    """Counts open/close tags: a well-formed page closes every non-void element it opens."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _png_ok(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_run_outputs_exist_and_are_valid(tmp_path):
    run = make_fake_run(tmp_path / "run")
    out = write_run_outputs(run)
    assert set(out) == {"pareto", "pareto_svg", "alignment", "grid", "report_md", "report_html"}
    for name in ("pareto.png", "alignment.png", "grid.png"):
        w, h = _png_ok(run / name)
        assert w > 300 and h > 200
    svg = ET.parse(run / "pareto.svg").getroot()
    assert svg.tag.endswith("svg")
    text = (run / "pareto.svg").read_text()
    # axes say which extractor / backbone, the title says N, each plotted point is labelled with its w
    assert "shapes-clip-v1/fd features" in text and "backbone shapes-clip-v1" in text
    assert "N = 4 images per w" in text
    assert "w=1" in text and "w=3" in text
    assert "w=7" not in text  # FD empty at w=7: left out, never drawn as 0
    assert "7 left out" in text


def test_empty_metric_cells_are_not_plotted(tmp_path):
    run = make_fake_run(tmp_path / "run")
    m = read_metrics(run / "metrics.csv")
    assert m["kid"].isna().all() and m.loc[m.guidance_weight == 7.0, "fd"].isna().all()
    from matplotlib.figure import Figure

    ax = Figure().add_subplot(1, 1, 1)
    notes = draw_pareto(ax, [Curve("run", category_rows(m, "all"))])
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "run")
    assert list(line.get_xdata()) == [20.0, 22.0] and list(line.get_ydata()) == [30.0, 25.0]
    assert notes and "w = 7" in notes[0]


def test_no_fd_at_all_gives_no_pareto_and_says_so(tmp_path):
    run = make_fake_run(tmp_path / "run", fd=False)
    (run / "pareto.png").write_bytes(b"stale")  # from an earlier scoring of this directory
    out = write_run_outputs(run)
    assert "pareto" not in out and not (run / "pareto.png").exists() and not (run / "pareto.svg").exists()
    assert "alignment" in out
    md = (run / "report.md").read_text()
    assert "Not computed (empty in metrics.csv, not plotted): fd, fd\\_real, kid, cmmd" in md


def test_alignment_plot_skips_a_category_without_values(tmp_path):
    from matplotlib.figure import Figure

    from bench.report import draw_vs_w

    m = read_metrics(make_fake_run(tmp_path / "run") / "metrics.csv")
    ax = Figure().add_subplot(1, 1, 1)
    curves = [Curve(c, category_rows(m, c)) for c in ("all", "Colors", "Positional")]
    notes = draw_vs_w(ax, curves, "alignment")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"all", "Colors"} and notes == ["Positional: alignment empty"]
    assert list(lines["all"].get_ydata()) == pytest.approx([0.2, 0.4, 0.6])
    assert len(ax.collections) == 2  # CI bands of the two plotted curves


def test_grid_shows_the_runs_images_per_weight(tmp_path):
    run = make_fake_run(tmp_path / "run")
    write_run_outputs(run)
    with Image.open(run / "grid.png") as im:
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(px, axis=0)}
    for c in COLORS.values():
        assert c in colours  # every weight's column shows that weight's image
    w, h = _png_ok(run / "grid.png")
    assert w > h  # 3 weights + the caption column, 4 prompt rows


def test_html_escapes_hostile_prompt_and_embeds_images(tmp_path):
    run = make_fake_run(tmp_path / "run")
    write_run_outputs(run)
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower() and "<b>bold" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 3  # pareto, alignment, grid: self-contained
    assert 'src="' not in page.replace('src="data:image/png;base64,', "")
    checker = _TagChecker()
    checker.feed(page)
    assert not checker.errors and checker.stack == [] and "script" not in checker.tags
    # the report carries its provenance
    for fact in ("abc123def", "777 MiB", "9.9-test", "imagen_tiny", "RANDOM WEIGHTS", "1.5 s",
                 "Frechet &lt;distance&gt;"):
        assert fact in page, fact
    assert "thresholding: dynamic" in page  # the verbatim .hydra/config.yaml


def test_markdown_escapes_too(tmp_path):
    run = make_fake_run(tmp_path / "run")
    write_run_outputs(run)
    md = (run / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert md_escape("a | b") == "a \\| b"  # a prompt never breaks a table row
    assert "![sample grid](grid.png)" in md and "![FD vs CLIP score over guidance weight](pareto.png)" in md
    assert "| 3 | all | 4 | 25 (22, 28) |" in md  # w, category, N, FD [CI]
    row7 = next(line for line in md.splitlines() if line.startswith("| 7 | all |"))
    assert row7.split("|")[4].strip() == ""  # empty, not 0


def test_metrics_disabled_still_writes_grid_and_report(tmp_path):
    run = make_fake_run(tmp_path / "run", metrics=False)
    out = write_run_outputs(run)
    assert set(out) == {"grid", "report_md", "report_html"}
    assert not (run / "pareto.png").exists() and not (run / "alignment.png").exists()
    assert "No metrics.csv" in (run / "report.md").read_text()


# ------------------------------------------------------------------ bench.compare

def _config_run(run: Path, model: str, steps: int, checkpoint: str, fd_shift: float = 0.0) -> Path:
    """A fake run whose config differs in the model group (and its nested stages) and sampler.steps."""
    import yaml

    make_fake_run(run, fd_empty_at=())
    cfg = {"model": {"name": model, "stages": [{"kind": "base", "checkpoint": checkpoint, "image_size": 32}]},
           "guidance": {"weights": [1, 3, 7], "thresholding": "dynamic"}, "sampler": {"kind": "ddim", "steps": steps},
           "seed": 0, "threads": 0}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"model": model, "sampler": "ddim", "hydra/launcher": "basic"}}}}))
    m = pd.read_csv(run / "metrics.csv")
    m["fd"] += fd_shift
    m.to_csv(run / "metrics.csv", index=False)
    return run


def test_compare_labels_name_only_differing_settings(tmp_path):
    from bench.compare import compare_runs

    a = _config_run(tmp_path / "a", "imagen_base", 25, "checkpoints/base/ema.safetensors")
    b = _config_run(tmp_path / "b", "imagen_base", 50, "checkpoints/base/ema.safetensors", fd_shift=3)
    c = _config_run(tmp_path / "c", "imagen_tiny", 25, "none", fd_shift=6)
    res = compare_runs([a, b, c], tmp_path / "out")
    # model.name and model.stages.0.checkpoint follow from the model choice; guidance/seed are equal
    assert res.labels == ["model=imagen_base sampler.steps=25", "model=imagen_base sampler.steps=50",
                          "model=imagen_tiny sampler.steps=25"]
    table = pd.read_csv(res.csv)
    assert list(table.columns[:4]) == ["run", "label", "model", "sampler.steps"]
    assert len(table) == 3 * 12 and table.loc[table["run"] == str(b), "sampler.steps"].eq(50).all()
    svg = (tmp_path / "out" / "pareto.svg").read_text()
    for lab in res.labels:
        assert lab in svg  # legend
    assert (tmp_path / "out" / "alignment.png").is_file()
    # more than two runs: each paired with the first, the b run named
    paired = pd.read_csv(tmp_path / "out" / "paired.csv")
    assert list(paired.columns[:10]) == ["run", "metric", "guidance_weight", "category", "a", "b", "diff",
                                         "ci_low", "ci_high", "verdict"]
    assert set(paired["run"]) == {str(b), str(c)}
    fd = paired[(paired.run == str(c)) & (paired.metric == "fd") & (paired.category == "all")]
    # fd + 6 with half-widths 3 and 3: 6 +- 4.24 excludes 0, lower is better
    assert (fd["diff"] == 6).all() and (fd["verdict"] == "worse").all()
    assert fd["ci_low"].iloc[0] == pytest.approx(6 - 3 * 2 ** 0.5)
    fd_b = paired[(paired.run == str(b)) & (paired.metric == "fd") & (paired.category == "all")]
    assert (fd_b["verdict"] == "no evidence").all()  # 3 +- 4.24


def _image_scores(run: Path, clip_shift: float = 0.0) -> None:
    man = pd.read_csv(run / "manifest.csv")
    per = man[["path", "prompt_id", "guidance_weight", "category", "seed"]].copy()
    per["clip_score"] = 20.0 + np.arange(len(per)) % 4 + clip_shift
    per["correct"] = [i % 2 == 0 for i in range(len(per))]
    per.to_csv(run / "image_scores.csv", index=False)


def test_compare_two_runs_writes_paired_verdicts(tmp_path):
    from bench.compare import compare_runs

    a = _config_run(tmp_path / "a", "imagen_base", 25, "x")
    b = _config_run(tmp_path / "b", "imagen_base", 50, "x")
    _image_scores(a)
    _image_scores(b, clip_shift=-0.3)  # every image 0.3 lower: the paired interval is exactly -0.3
    res = compare_runs([a, b], tmp_path / "out")
    paired = pd.read_csv(res.paired_csv)
    assert list(paired.columns[:9]) == ["metric", "guidance_weight", "category", "a", "b", "diff", "ci_low",
                                        "ci_high", "verdict"]
    clip = paired[paired.metric == "clip_score"]
    assert (clip["ci_high"] < 0).all() and (clip["verdict"] == "worse").all()
    assert clip["method"].str.contains("paired bootstrap").all()
    al = paired[paired.metric == "alignment"]
    assert (al["verdict"] == "no evidence").all() and (al["ci_low"] == 0).all()


def test_compare_keeps_a_nested_key_the_choice_does_not_explain(tmp_path):
    from bench.compare import config_labels

    a = _config_run(tmp_path / "a", "imagen_base", 25, "ckpt/one.safetensors")
    b = _config_run(tmp_path / "b", "imagen_base", 25, "ckpt/two.safetensors")
    labels, _ = config_labels([a, b])
    assert labels == ["model.stages.0.checkpoint=ckpt/one.safetensors",
                      "model.stages.0.checkpoint=ckpt/two.safetensors"]
    same, _ = config_labels([a, _config_run(tmp_path / "a2", "imagen_base", 25, "ckpt/one.safetensors")])
    assert same == ["a", "a2"]  # nothing differs: the directory names


def test_compare_expands_a_multirun_folder_in_numeric_order(tmp_path):
    from bench.compare import CompareError, expand_runs

    sweep = tmp_path / "multirun" / "12-00-00"
    for i in (0, 1, 10, 2):
        _config_run(sweep / str(i), "imagen_base", 10 + i, "x")
    (sweep / "multirun.yaml").write_text("{}")
    (sweep / "notes").mkdir()
    assert [p.name for p in expand_runs([sweep])] == ["0", "1", "2", "10"]
    assert [p.name for p in expand_runs([sweep / "2", sweep])] == ["2", "0", "1", "10"]
    with pytest.raises(CompareError, match="neither a run directory"):
        expand_runs([tmp_path / "multirun"])


def test_compare_cli(tmp_path):
    import subprocess
    import sys

    a = _config_run(tmp_path / "a", "imagen_base", 25, "x")
    b = _config_run(tmp_path / "b", "imagen_base", 50, "x")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "bench.compare", f"runs=[{a},{b}]", f"out={tmp_path / 'cmp'}"],
                         cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sampler.steps=50" in out.stdout
    assert (tmp_path / "cmp" / "compare.csv").is_file() and (tmp_path / "cmp" / "pareto.png").is_file()
    assert (tmp_path / "cmp" / "paired.csv").is_file() and "paired verdicts against" in out.stdout
    assert "no evidence" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "bench.compare", f"runs=[{a}]"], cwd=repo, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "missing out" in bad.stderr


@pytest.mark.slow
def test_bench_run_writes_grid_and_report_without_metrics(tmp_path):
    """bench.run.run with metrics disabled still leaves a grid and a report (tiny random cascade)."""
    from bench.figures import compose_run_config
    from bench.run import run

    cfg = compose_run_config(["model=imagen_tiny", "guidance.weights=[1,4]", "prompts.limit=2", "sampler.steps=2",
                              "sampler.sr_steps=2", "sampler.micro_batch=2", "metrics=none", "device=cpu",
                              "threads=1"])
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    assert _png_ok(run_dir / "grid.png")[0] > 300
    assert not (run_dir / "pareto.png").exists() and not (run_dir / "metrics.csv").exists()
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "No metrics.csv" in page
    info = json.loads((run_dir / "run_info.json").read_text())
    assert f"{info['peak_memory_mib']:.0f} MiB" in page and info["git_revision"] in page


def test_report_module_cli_rewrites_outputs(tmp_path, capsys):
    from bench.report.report import main

    run = make_fake_run(tmp_path / "run")
    assert main([str(run)]) == 0
    assert "report_html" in capsys.readouterr().out and (run / "report.html").is_file()
    assert main([]) == 2


def test_dollar_signs_in_labels_are_drawn_literally(tmp_path):
    """A '$' in a label, title or extractor name never switches matplotlib into (failing) math mode."""
    from bench.report import pareto_figure

    m = read_metrics(make_fake_run(tmp_path / "run", fd_empty_at=()) / "metrics.csv")
    m["fd_extractor"] = r"weights at /tmp/$\notacommand$/x"
    t = category_rows(m, "all")
    png = pareto_figure([Curve(r"sampler=$\bad{$", t), Curve("b", t)], tmp_path / "p.png", tmp_path / "p.svg",
                        title=r"run $\alsobad$")
    assert png is not None and _png_ok(png)[0] > 300
    svg = (tmp_path / "p.svg").read_text()
    assert r"sampler=$\bad{$" in svg and r"/tmp/$\notacommand$/x" in svg


def test_report_lists_the_images_the_detector_marks_wrong_lowest_clip_score_first(tmp_path):
    run = make_fake_run(tmp_path / "run")
    man = pd.read_csv(run / "manifest.csv", keep_default_na=False)
    per = man[["path", "prompt_id", "guidance_weight", "category", "seed"]].copy()
    per["clip_score"] = np.arange(len(per), 0, -1, dtype=float)  # the last image scores lowest
    per["correct"] = [i % 2 == 1 for i in range(len(per))]  # the hostile prompt (row 0) is wrong
    per["color_correct"] = True
    per.to_csv(run / "image_scores.csv", index=False)
    write_run_outputs(run)
    md = (run / "report.md").read_text()
    section = md.split("## Images to look at")[1]
    assert f"{len(per) // 2} of {len(per)} images the exact detector marks wrong" in section
    wrong = per[~per["correct"]].sort_values("clip_score")
    first, second = wrong["path"].iloc[0], wrong["path"].iloc[1]
    assert section.index(md_escape(first)) < section.index(md_escape(second))
    assert md_escape(per[per["correct"]]["path"].iloc[0]) not in section
    html_text = (run / "report.html").read_text()
    assert "Images to look at" in html_text and "<script>" not in html_text  # the hostile prompt, escaped
    assert "&lt;script&gt;" in html_text.split("Images to look at")[1]


def test_report_without_image_scores_has_no_such_section(tmp_path):
    run = make_fake_run(tmp_path / "run")
    write_run_outputs(run)
    assert "Images to look at" not in (run / "report.md").read_text()
