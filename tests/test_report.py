"""`personas report DIR`: a self-contained HTML file with the table, plots, examples and provenance, checked in a
real headless browser when one is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

import personas
from personas.cli.main import main
from personas.config import CaptureConfig
from personas.errors import PersonasError
from personas.report.html import render_report, write_report

from conftest import TOY_HOOK, TRIGGERS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run(toy_model, planted_sae, planted_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rank")
    result = personas.rank(
        pd.DataFrame(planted_data), model=toy_model, sae=planted_sae, capture=CaptureConfig(hook=TOY_HOOK),
        keep_tokens=True, out=out, progress=False,
    )
    return out, result


def test_report_is_self_contained(run, tmp_path):
    out, _ = run
    path = write_report(out, out=tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and 'id="ranking-table"' in text
    assert text.count('<img class="plot"') >= 3 and "data:image/png;base64," in text
    # nothing is fetched from elsewhere: no external scripts, styles, fonts or images
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text.replace("https://www.neuronpedia.org", ""))
    assert "@import" not in text and "<link" not in text
    # the planted feature heads the table, marked significant, and has examples linked from it
    first_row = text.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert "&#9733;" in first_row and 'data-v="7"' in first_row and 'href="#feature-7"' in first_row
    assert 'id="feature-7"' in text and "personas-token" in text
    assert TOY_HOOK in text and "dataset sha256" in text


def test_report_from_result_adds_distributions(run, tmp_path):
    out, result = run
    text = render_report(out, result=result, distributions=2)
    assert "Pooled activations of the top 2 features" in text


def test_report_without_examples(run, tmp_path):
    out, _ = run
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("ranking.csv", "manifest.json"):
        shutil.copy(out / name, bare / name)
    text = render_report(bare, top=5)
    assert "No top-activating examples" in text and text.count("<tr") >= 6
    assert "more rows in ranking.csv" in text


def test_report_errors(tmp_path):
    with pytest.raises(PersonasError, match="ranking.csv or manifest.json"):
        render_report(tmp_path)
    with pytest.raises(PersonasError, match="not a folder"):
        render_report(tmp_path / "missing")


def test_cli(run, tmp_path, capsys):
    out, _ = run
    assert main(["report", str(out), "--out", str(tmp_path / "cli.html"), "--top", "3"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "cli.html").exists()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _headless(browser: str, profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(profile)},
    )


def test_report_renders_in_a_real_browser(run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); "
                    "install Debian's `chromium` to run this check (.ci/run does)")
    out, _ = run
    path = write_report(out, out=tmp_path / "report.html")
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert '<table class="ranking" id="ranking-table">' in html
    assert html.count('<img class="plot"') >= 3
    assert any(w in html for w in TRIGGERS)  # the examples made it into the rendered page

    shot = tmp_path / "shot.png"
    result = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,1600",
                       "--hide-scrollbars", path.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page

    # the plots decoded: an <img> that failed to load has naturalWidth 0
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',function(){var ok=Array.from(document.images)"
              ".filter(function(i){return i.naturalWidth>100}).length;document.title='loaded:'+ok;"
              "document.body.setAttribute('data-loaded',ok);});</script>")
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = _headless(browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    loaded = re.search(r'data-loaded="(\d+)"', dom.stdout)
    assert loaded and int(loaded.group(1)) >= 3, dom.stdout[:500]


def test_manifest_is_embedded(run):
    out, _ = run
    text = render_report(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["created_at"] in text and "full manifest.json" in text


# Scrolls each header of the ranking table into view and counts those that are then on screen, inside the window,
# and not covered by anything else: what a reader can reach by scrolling. Also reports the widths of the table's
# box and of the page: the table must scroll in its own box, not stretch (or cut) the page.
_REACH_PROBE = """<script>window.addEventListener('load',function(){
  var ths=Array.from(document.querySelectorAll('#ranking-table th')),ok=0;
  ths.forEach(function(th){th.scrollIntoView({block:'center',inline:'center'});var r=th.getBoundingClientRect();
    var hit=document.elementFromPoint(r.left+r.width/2,r.top+r.height/2);
    if(r.width>0&&r.left>=0&&r.right<=window.innerWidth&&hit&&th.contains(hit))ok++;});
  var box=document.querySelector('#ranking-table').parentElement;
  document.body.setAttribute('data-reach',[ok,ths.length,box.scrollWidth,box.clientWidth,window.innerWidth,
    document.documentElement.scrollWidth].join(','));
});</script>"""


@pytest.mark.parametrize("width", [1280, 700])
def test_every_column_of_the_table_is_reachable_in_a_real_browser(run, tmp_path, width):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); "
                    "install Debian's `chromium` to run this check (.ci/run does)")
    out, _ = run
    text = render_report(out)
    n_columns = len(re.findall(r"<th[ >]", text.split("</thead>", 1)[0]))
    probe = tmp_path / "reach.html"
    probe.write_text(text.replace("</body>", _REACH_PROBE + "</body>"), encoding="utf-8")
    dom = _headless(browser, tmp_path / "profile", f"--window-size={width},900", "--virtual-time-budget=5000",
                    "--dump-dom", probe.as_uri())
    found = re.search(r'data-reach="([\d,]+)"', dom.stdout)
    assert found, dom.stdout[-1000:] + dom.stderr[-1000:]
    reachable, total, scroll_width, client_width, window, page_width = map(int, found.group(1).split(","))
    assert window <= width and total == n_columns >= 12
    assert reachable == total, (reachable, total, scroll_width, client_width, window)
    assert page_width <= window, f"the page is {page_width} px wide in a {window} px window"  # nothing pokes out
    if width < 1000:
        assert scroll_width > client_width  # the table is wider than the page: it scrolls instead of being cut


def test_every_plot_a_run_supports_is_drawn_and_a_broken_plot_is_not_swallowed(run, toy_model, planted_data,
                                                                               tmp_path, monkeypatch, caplog):
    import personas.report.html as html

    out, _ = run
    text = render_report(out)  # groups and an SAE: volcano, AUROC intervals, pooled vs within-question AUROC
    assert text.count('<img class="plot"') == 3 and "Pooled against within-question AUROC" in text
    # a run without an SAE (raw activations) and without groups: the two plots that need neither, nothing else
    bare = tmp_path / "bare"
    frame = pd.DataFrame(planted_data).drop(columns=["group"])
    personas.rank(frame, model=toy_model, sae="none", capture=CaptureConfig(hook=TOY_HOOK), out=bare, progress=False)
    text = render_report(bare)
    assert text.count('<img class="plot"') == 2 and "Pooled against within-question AUROC" not in text
    assert "Volcano plot" in text and 'id="ranking-table"' in text
    # only a ranking without the columns a plot needs skips it (logged); any other failure is an error
    monkeypatch.setattr(html.plot, "volcano", lambda *a, **k: (_ for _ in ()).throw(PersonasError("no q_value")))
    with caplog.at_level("INFO", logger="personas.report.html"):
        assert render_report(out).count('<img class="plot"') == 2
    assert "skipped a plot in the report: no q_value" in caplog.text
    monkeypatch.setattr(html.plot, "volcano", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        render_report(out)
