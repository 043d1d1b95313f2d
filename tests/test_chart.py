"""Issue 15: the chart of an alias move in the pull-request comment.

Three parts. The mermaid text, pure (no server): `escape.mermaid` as a table and a
property, the block `render.chart` writes for a small series (golden-ish), hostile
model, alias and metric names, values that are missing or not finite, the cap. Then the
data path on a real registry: the examples' LGBM model with five versions, promoted by
`diff --format markdown`, whose JSON carries the same series and whose text has no
chart; against the real server the chart's reads of versions no subject covers are one
batched search however many there are. Last, the block drawn by mermaid-cli (`mmdc`) in
headless Chromium: a PNG of a reasonable size with the line on it, and an SVG whose text
is the hostile names, decoded, and no element of theirs. Those tests skip when the tools
are missing and CI is unset, and fail under CI (`.ci/run` installs them).

`REGCTL_UPDATE_DOCS=1` rewrites docs/images/alias-chart.png from the realistic example.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regctl import escape
from regctl.policy.comparison import chart_versions, charted_metric, metric_series
from regctl.policy.values import Comparison, ComparisonRow, MetricSeries, SeriesPoint
from regctl.render.chart import chart_lines

from conftest import REPO, Backend, Recorder

CLI = Callable[..., tuple[int, str, str]]
API = "/api/2.0/mlflow"
LGBM = "run_20251008_145809_lgbm_y_logret_168h_huber"
EXAMPLE = "btcusdt-1h-inference-7d-logret"
DOCS_IMAGE = REPO / "docs" / "images" / "alias-chart.png"
FENCE = re.compile(r"^```mermaid\n(.*?)\n```$", re.DOTALL | re.MULTILINE)
ENTITY = re.compile(r"#(\d+);")

# ------------------------------------------------------------------ escape.mermaid


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("btcusdt-1h-inference-7d-logret", "btcusdt-1h-inference-7d-logret"),
        ("rmse_test v1.2 (a/b) [x], 'y' @z!", "rmse_test v1.2 (a/b) [x], 'y' @z!"),
        ('a"b', "a#34;b"),
        ("%%{init: {}}%%", "#37;#37;#123;init#58; #123;#125;#125;#37;#37;"),
        ("a --> b", "a --#62; b"),
        ("`x`", "#96;x#96;"),
        ("<b>&amp;</b>", "#60;b#62;#38;amp#59;#60;/b#62;"),
        ("#lt;", "#35;lt#59;"),  # a value's own entity code is shown as written
        ("a\nb", "a\\nb"),  # escape.text first: one line
        ("\u202e", "\\u202e"),
        ("é中🙂 straße", "é中🙂 stra#223;e"),
        ("\ufb02\xb0\xb0x\xb6\xdf", "#64258;#176;#176;x#182;#223;"),  # mermaid's placeholders
        ("style x:#f00;", "style x#58;#35;f00#59;"),
        ("$$x^2$$", "#36;#36;x^2#36;#36;"),
    ],
)
def test_mermaid_escape(value: str, expected: str) -> None:
    assert escape.mermaid(value) == expected


def test_mermaid_escape_shortens_what_is_drawn() -> None:
    assert escape.mermaid("a" * 60) == "a" * 60
    assert escape.mermaid("a" * 61) == "a" * 57 + "..."
    assert escape.mermaid('"' * 30, limit=10) == "#34;" * 7 + "..."


@given(st.text())
def test_mermaid_escape_is_inert_and_decodes_back(value: str) -> None:
    out = escape.mermaid(value, limit=10_000)
    assert re.fullmatch(r"(?:[^\"%#;:`<>&{}$\ufb02\xb0\xb6\xdf\n]|#\d+;)*", out)
    assert ENTITY.sub(lambda m: chr(int(m.group(1))), out) == escape.text(value)


# ------------------------------------------------------------------ the mermaid text


def comparison(
    series: MetricSeries | None, model: str = EXAMPLE, alias: str = "Production"
) -> Comparison:
    return Comparison(model, alias, "cand", "inc", "rmse", (), series)


def block(lines: list[str]) -> list[str]:
    """The lines inside the ```mermaid fence."""
    start = lines.index("```mermaid")
    return lines[start + 1 : lines.index("```", start)]


def test_chart_of_a_promotion() -> None:
    points = ((1, 0.044651), (2, 0.0458), (3, 0.0441), (4, 0.0447), (5, 0.0436))
    series = MetricSeries("rmse_test", tuple(SeriesPoint(*p) for p in points), 5, 3, 5)
    assert chart_lines(comparison(series)) == [
        "",
        "```mermaid",
        '%%{init: {"xyChart": {"width": 720, "height": 280, "titleFontSize": 16}, '
        '"themeVariables": {"xyChart": {"plotColorPalette": "#1f6feb"}}}}%%',
        "xychart-beta horizontal",
        '    title "btcusdt-1h-inference-7d-logret Production, rmse_test per version"',
        '    x-axis ["v1", "v2", "v3 (Production)", "v4", "v5 (candidate)"]',
        '    y-axis "rmse_test"',
        "    line [0.044651, 0.0458, 0.0441, 0.0447, 0.0436]",
        "```",
    ]


def test_numbers_have_no_exponent_and_labels_mark_both_roles() -> None:
    points = ((1, 1.5e-07), (2, 12345678.9), (3, -0.0), (4, -2.5e-5))
    series = MetricSeries("loss", tuple(SeriesPoint(*p) for p in points), 2, 2, 4)
    inside = block(chart_lines(comparison(series, alias="Staging")))
    assert inside[-1] == "    line [0.00000015, 12345700, 0, -0.000025]"
    assert '"v2 (candidate, Staging)"' in inside[3]
    assert "height" in inside[0]


def test_missing_and_non_finite_points_are_left_out_and_named() -> None:
    values = (0.05, None, math.nan, math.inf, 0.04, -math.inf)
    series = MetricSeries(
        "rmse_test", tuple(SeriesPoint(i + 1, v) for i, v in enumerate(values)), 5, 1, 6
    )
    lines = chart_lines(comparison(series))
    inside = block(lines)
    assert inside[3] == '    x-axis ["v1 (Production)", "v5 (candidate)"]'
    assert inside[-1] == "    line [0.05, 0.04]"
    assert lines[-1] == "Not charted: v2 (no value), v3 (nan), v4 (inf), v6 (-inf)."
    assert not re.search(r"\b(nan|inf)\b", "\n".join(inside))


def test_no_finite_value_no_chart() -> None:
    series = MetricSeries("rmse_test", (SeriesPoint(1, None), SeriesPoint(2, math.nan)), 2, 1, 2)
    lines = chart_lines(comparison(series))
    assert "```mermaid" not in lines
    assert lines == ["", "No chart of `rmse_test`: no version has a finite value."]
    assert chart_lines(comparison(None)) == []


def test_a_capped_chart_says_so() -> None:
    points = tuple(SeriesPoint(n, 0.04 + n / 1000) for n in (2, *range(22, 41)))
    lines = chart_lines(comparison(MetricSeries("rmse_test", points, 40, 2, 40)))
    assert lines[-1] == (
        "The chart shows 20 of 40 versions: the newest, the candidate and the incumbent."
    )
    assert len(block(lines)[3].split(", ")) == 20


HOSTILE = (
    '"] \n```\n%%{init: {"securityLevel": "loose"}}%%\nx-axis --> <img src=x onerror=alert(1)>'
    " `pwned` #lt;script#gt; \u202e @octocat"
)
LINE = re.compile(
    r"(?:%%\{init: .*\}%%"
    r"|xychart-beta horizontal"
    r'|    title "[^"%`\n:<>&]*"'
    r'|    x-axis \["[^"%`\n:<>&]*"(?:, "[^"%`\n:<>&]*")*\]'
    r'|    y-axis "[^"%`\n:<>&]*"'
    r"|    line \[-?[0-9.]+(?:, -?[0-9.]+)*\])"
)


def test_hostile_names_stay_inside_their_strings() -> None:
    series = MetricSeries(HOSTILE, (SeriesPoint(1, 0.5), SeriesPoint(2, 0.4)), 2, 1, 2)
    lines = chart_lines(comparison(series, model=HOSTILE, alias=HOSTILE))
    inside = block(lines)
    assert len(lines) == 2 + len(inside) + 1  # the fence closes where regctl closes it
    for line in inside:
        assert LINE.fullmatch(line), line
    assert sum("%%" in line for line in inside) == 1  # regctl's own directive only
    assert not any("`" in line or "-->" in line for line in inside)
    title = inside[2].removeprefix('    title "').removesuffix('"')
    shown = ENTITY.sub(lambda m: chr(int(m.group(1))), title)
    assert shown.startswith(escape.text(HOSTILE)[:37] + "...")


# ------------------------------------------------------------------ which versions


def test_chart_versions_keep_the_marked_ones_and_the_newest() -> None:
    assert chart_versions(range(1, 6), [5, 3], 20) == [1, 2, 3, 4, 5]
    assert chart_versions(range(1, 41), [40, 2], 20) == [2, *range(22, 41)]
    assert chart_versions(range(1, 41), [40], 3) == [38, 39, 40]
    assert chart_versions([1, 2], [7], 20) == [1, 2]  # marked but unknown: not invented
    assert chart_versions(range(1, 10), [1, 9], 1) == [1, 9]


def test_charted_metric_is_a_primary_one() -> None:
    rows = (ComparisonRow("rmse_test", 0.1, 0.2, -0.1), ComparisonRow("corr", 1, 1, 0))
    assert charted_metric(rows, "rmse") == "rmse_test"
    assert charted_metric(rows, "rmse_test") == "rmse_test"
    assert charted_metric(rows, "auc") is None  # not logged: no chart
    assert charted_metric(rows, "") is None
    assert charted_metric((), "rmse") is None


def test_metric_series_of_known_and_unknown_runs() -> None:
    s = metric_series(
        "rmse_test",
        {3: {"rmse_test": 0.3}, 1: {"rmse_test": 0.1}, 2: None, 4: {"mae": 1.0}},
        candidate=4,
        incumbent=1,
        total=9,
    )
    assert s.points == (
        SeriesPoint(1, 0.1),
        SeriesPoint(2, None),
        SeriesPoint(3, 0.3),
        SeriesPoint(4, None),
    )
    assert (s.candidate, s.incumbent, s.total) == (4, 1, 9)


# ------------------------------------------------------------------ the data path

RMSE = (0.044651, 0.0458, 0.0441, 0.0447, 0.0436, 0.0449)
"""rmse_test of the trainings: in the example v3 is in Production, v5 the candidate."""


def retrain(repo: Path, version: int) -> str:
    """The run directory of the example's `version`-th training (the first is the shipped
    one; later ones are copies with another test rmse) as a manifest entry."""
    base = repo / "examples" / "runs" / "BINANCE_BTCUSDT.P, 60"
    run = LGBM if version == 1 else f"run_202510{14 + version:02d}_120000_lgbm_y_logret_168h_huber"
    if version > 1:
        shutil.copytree(base / LGBM, base / run)
        (base / run / "run_metadata.json").unlink()
        metrics = json.loads((base / run / "metrics.json").read_text())
        metrics["test"]["rmse"] = RMSE[version - 1]
        (base / run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return (
        f"  - run: {run}\n    run_dir: examples/runs/BINANCE_BTCUSDT.P, 60/{run}\n"
        f"    description: Retrain {version}.\n"
    )


def lgbm_history(
    repo: Path, name: str, experiment: str, versions: int, production: int = 3
) -> Path:
    """The examples' LGBM model with `versions` trainings, Production on one of them: the
    repository's only manifest."""
    for stale in (repo / "manifests").glob("*.yaml"):
        stale.unlink()
    entries = [retrain(repo, v) for v in range(1, versions + 1)]
    entries[production - 1] += "    aliases: [Production]\n"
    path = repo / "manifests" / f"{name}.yaml"
    path.write_text(
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\n"
        f"description: 7-day log-return forecaster.\nexperiment: {experiment}\n"
        "versions:\n" + "".join(entries)
    )
    return path


def promote_new(repo: Path, path: Path, version: int) -> None:
    """Add training `version` to the manifest and move Production to it."""
    text = path.read_text().replace("    aliases: [Production]\n", "")
    path.write_text(text + retrain(repo, version) + "    aliases: [Production]\n")


def promoted_example(repo: Path, run_cli: CLI, *flags: str) -> str:
    """Apply v1..v4 (Production on v3), add v5 holding Production; the markdown plan."""
    path = lgbm_history(repo, EXAMPLE, "binance-btcusdt-perp-1h-7d-logret", 4)
    code, out, err = run_cli(*flags, "apply", "--auto-approve")
    assert code == 0, out + err
    promote_new(repo, path, 5)
    code, out, err = run_cli(*flags, "diff", "--format", "markdown")
    assert code == 0, out + err
    return out


def test_promotion_comment_charts_every_version(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(examples_repo)
    out = promoted_example(examples_repo, run_cli)
    (chart,) = FENCE.findall(out)
    assert chart.splitlines()[1:] == [
        "xychart-beta horizontal",
        '    title "btcusdt-1h-inference-7d-logret Production, rmse_test per version"',
        '    x-axis ["v1", "v2", "v3 (Production)", "v4", "v5 (candidate)"]',
        '    y-axis "rmse_test"',
        "    line [" + ", ".join(str(v) for v in RMSE[:5]) + "]",
    ]
    # after the move's table; JSON carries the same series, text has no chart
    assert out.index("| **`rmse_test`** | 0.0436 | 0.0441 |") < out.index("```mermaid")
    doc = json.loads(run_cli("diff", "--format", "json")[1])
    (comp,) = doc["comparisons"]
    assert comp["series"] == {
        "metric": "rmse_test",
        "candidate": 5,
        "incumbent": 3,
        "total": 5,
        "points": [{"version": i + 1, "value": v} for i, v in enumerate(RMSE[:5])],
    }
    text = run_cli("diff")[1]
    assert "rmse_test: 0.0436 (incumbent 0.0441)" in text
    assert "mermaid" not in text and "xychart" not in text


def counted(rec: Recorder) -> Counter[str]:
    return Counter(f"{m} {p.removeprefix(API)}" for m, p in rec.calls)


RUN_READS = ("POST /experiments/search", "POST /runs/search", "GET /runs/get")
CHART_READS = {
    0: {},
    1: {"GET /runs/get": 1},
    3: {"POST /experiments/search": 1, "POST /runs/search": 1},
}
"""What the chart adds to a diff's run reads, by how many charted versions the manifests
no longer declare: nothing when every version is declared (observe has read their runs),
one `get` for one run, and one batch (an experiment search and a run search) for more."""


@pytest.mark.server
@pytest.mark.parametrize("undeclared", sorted(CHART_READS))
def test_chart_reads_versions_no_subject_covers_in_one_batch(
    server_backend: Backend,
    examples_repo: Path,
    uniq: str,
    run_cli: CLI,
    http_log: Recorder,
    undeclared: int,
) -> None:
    b = server_backend
    flags = ("--tracking-uri", b.uri, "--repo", str(examples_repo))
    path = lgbm_history(examples_repo, f"{uniq}-lgbm", f"{uniq}-exp", 5, production=5)
    assert run_cli(*flags, "apply", "--auto-approve")[0] == 0
    # the manifests drop the oldest versions (the registry keeps them, unmanaged) and
    # promote a sixth
    head, *entries = path.read_text().split("  - run: ")
    path.write_text("  - run: ".join([head, *entries[undeclared:]]))
    promote_new(examples_repo, path, 6)
    http_log.clear()
    code, out, err = run_cli(*flags, "diff", "--format", "markdown")
    assert code == 0, out + err
    (chart,) = FENCE.findall(out)
    assert '    x-axis ["v1", "v2", "v3", "v4", "v5 (Production)", "v6 (candidate)"]' in chart
    assert "line [" + ", ".join(str(v) for v in RMSE) + "]" in chart
    # observe's own run reads (one experiment search, one run search) plus the chart's
    expected = Counter({"POST /experiments/search": 1, "POST /runs/search": 1})
    expected.update(CHART_READS[undeclared])
    reads = counted(http_log)
    assert Counter({k: reads[k] for k in RUN_READS if reads[k]}) == expected, reads
    # the text plan shows no chart and reads nothing for one
    http_log.clear()
    assert run_cli(*flags, "diff")[0] == 0
    reads = counted(http_log)
    assert {k: reads[k] for k in RUN_READS if reads[k]} == {
        "POST /experiments/search": 1,
        "POST /runs/search": 1,
    }


# ------------------------------------------------------------------ drawn by mermaid-cli

PUPPETEER = {
    "executablePath": "/usr/bin/chromium",
    "args": [
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ],
}


def mmdc() -> str:
    """mermaid-cli's `mmdc`: REGCTL_MMDC, else where `.ci/run` installs it. Missing tools
    skip the test locally and fail it under CI."""
    default = Path.home() / ".cache" / "regctl-ci" / "node" / "node_modules" / ".bin" / "mmdc"
    found = os.environ.get("REGCTL_MMDC") or str(default)
    missing = [p for p in (found, PUPPETEER["executablePath"]) if not os.access(p, os.X_OK)]
    if missing:
        why = f"mermaid-cli or Chromium missing: {', '.join(map(str, missing))} (see .ci/run)"
        if "CI" in os.environ:
            pytest.fail(why)
        pytest.skip(why)
    return found


def draw(tool: str, source: str, out: Path) -> Path:
    """Render mermaid `source` to `out` (.png or .svg) with mmdc in headless Chromium."""
    config = out.parent / "puppeteer.json"
    config.write_text(json.dumps(PUPPETEER))
    src = out.with_suffix(".mmd")
    src.write_text(source)
    done = subprocess.run(
        [tool, "--quiet", "-p", str(config), "-i", str(src), "-o", str(out), "-b", "white"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.is_file()
    return out


def test_the_example_chart_draws_to_a_png(
    examples_repo: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from PIL import Image

    tool = mmdc()
    monkeypatch.chdir(examples_repo)
    (chart,) = FENCE.findall(promoted_example(examples_repo, run_cli))
    png = draw(tool, chart, tmp_path / "chart.png")
    with Image.open(png) as image:
        width, height = image.size
        rgb = image.convert("RGB")
        colours = Counter(rgb.getdata())
    assert width >= 400 and height >= 200, (width, height)
    background, share = colours.most_common(1)[0]
    assert background == (255, 255, 255) and share < 0.97 * width * height  # not blank
    # the line itself: pixels of regctl's plot colour (#1f6feb), not just axes and text
    line = sum(
        n for (r, g, b), n in colours.items() if abs(r - 31) + abs(g - 111) + abs(b - 235) < 60
    )
    assert line > 100, line
    if os.environ.get("REGCTL_UPDATE_DOCS"):  # regenerate, then look at it before committing
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, DOCS_IMAGE)


def test_hostile_names_draw_as_text(tmp_path: Path) -> None:
    tool = mmdc()
    series = MetricSeries(HOSTILE, (SeriesPoint(1, 0.5), SeriesPoint(2, 0.4)), 2, 1, 2)
    lines = chart_lines(comparison(series, model=HOSTILE, alias="Prod"))
    svg = draw(tool, "\n".join(block(lines)), tmp_path / "chart.svg")
    root = ET.fromstring(svg.read_text())
    tags = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert not tags & {"script", "img", "foreignObject", "a", "iframe"}, tags
    assert not any(k.startswith("on") for el in root.iter() for k in el.attrib)
    texts = ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("}text")]
    shown = escape.text(HOSTILE)
    assert f"{shown[:37]}... Prod, {shown[:21]}... per version" in texts
    assert "v1 (Prod)" in texts and "v2 (candidate)" in texts
