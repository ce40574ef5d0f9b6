"""`personas report DIR`: a self-contained HTML file with the table, plots, examples and provenance, checked in a
real headless browser when one is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import personas
from personas.cli.main import main
from personas.config import CaptureConfig
from personas.errors import PersonasError
from personas.report.html import render_report, write_report
from personas.testing import save_toy_hf_model

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
# box and of the page: the table must scroll in its own box, not stretch (or cut) the page; and counts the feature
# cards that lie whole inside the page, with no element sticking out of their right edge.
_REACH_PROBE = """<script>window.addEventListener('load',function(){
  var ths=Array.from(document.querySelectorAll('#ranking-table th')),ok=0;
  ths.forEach(function(th){th.scrollIntoView({block:'center',inline:'center'});var r=th.getBoundingClientRect();
    var hit=document.elementFromPoint(r.left+r.width/2,r.top+r.height/2);
    if(r.width>0&&r.left>=0&&r.right<=window.innerWidth&&hit&&th.contains(hit))ok++;});
  var box=document.querySelector('#ranking-table').parentElement;
  var cards=Array.from(document.querySelectorAll('.personas-card')),whole=0;
  cards.forEach(function(c){var r=c.getBoundingClientRect();
    var inner=Array.from(c.querySelectorAll('*')).every(function(e){var q=e.getBoundingClientRect();
      return q.width===0||q.right<=r.right+1;});
    if(r.width>0&&r.left>=0&&r.right<=document.documentElement.clientWidth&&c.scrollWidth<=c.clientWidth+1&&inner)whole++;});
  document.body.setAttribute('data-reach',[ok,ths.length,box.scrollWidth,box.clientWidth,window.innerWidth,
    document.documentElement.scrollWidth,whole,cards.length].join(','));
});</script>"""


@pytest.mark.parametrize("width", [1280, 700])
def test_every_column_of_the_table_is_reachable_in_a_real_browser(run, tmp_path, width):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); "
                    "install Debian's `chromium` to run this check (.ci/run does)")
    out, result = run
    text = render_report(out, result=result, cards=3)
    n_columns = len(re.findall(r"<th[ >]", text.split("</thead>", 1)[0]))
    probe = tmp_path / "reach.html"
    probe.write_text(text.replace("</body>", _REACH_PROBE + "</body>"), encoding="utf-8")
    dom = _headless(browser, tmp_path / "profile", f"--window-size={width},900", "--virtual-time-budget=5000",
                    "--dump-dom", probe.as_uri())
    found = re.search(r'data-reach="([\d,]+)"', dom.stdout)
    assert found, dom.stdout[-1000:] + dom.stderr[-1000:]
    reachable, total, scroll_width, client_width, window, page_width, whole, n_cards = map(
        int, found.group(1).split(","))
    assert window <= width and total == n_columns >= 12
    assert n_cards == 3 and whole == n_cards, f"{n_cards - whole} of {n_cards} cards cut at {width} px"
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


# ------------------------------------------------------------------------------------------------ feature cards


class _StrictHTML:
    """A well-formedness check with the standard library: every non-void element closed in order, ids unique, one
    doctype, html, head and body."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
            "line", "rect"}  # the SVG shapes are written self-closed

    def __init__(self, text: str):
        from html.parser import HTMLParser

        self.stack: list[str] = []
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.doctype = 0
        outer = self

        class Parser(HTMLParser):
            def handle_decl(self, decl):
                outer.doctype += decl.lower() == "doctype html"

            def handle_starttag(self, tag, attrs):
                outer.counts[tag] = outer.counts.get(tag, 0) + 1
                outer.ids += [v for k, v in attrs if k == "id"]
                if tag not in outer.VOID:
                    outer.stack.append(tag)

            def handle_startendtag(self, tag, attrs):
                outer.ids += [v for k, v in attrs if k == "id"]

            def handle_endtag(self, tag):
                if tag in outer.VOID:
                    return
                if not outer.stack or outer.stack[-1] != tag:
                    outer.errors.append(f"</{tag}> closes <{outer.stack[-1] if outer.stack else None}>")
                else:
                    outer.stack.pop()

        Parser(convert_charrefs=True).feed(text)

    def problems(self) -> list[str]:
        out = list(self.errors) + [f"unclosed <{t}>" for t in self.stack]
        out += [f"duplicate id {i!r}" for i in {i for i in self.ids if self.ids.count(i) > 1}]
        out += [f"{self.counts.get(t, 0)} <{t}>" for t in ("html", "head", "body") if self.counts.get(t, 0) != 1]
        return out + ([] if self.doctype == 1 else ["no single <!DOCTYPE html>"])


def _planted_sae(sae, feature: int, direction):
    import copy

    import torch

    twin = copy.deepcopy(sae)
    with torch.no_grad():
        twin.W_dec[feature] = torch.as_tensor(direction, dtype=twin.W_dec.dtype)
    return twin


def test_the_logit_lens_of_a_card_is_the_decoder_direction_through_norm_and_unembedding(run, toy_model,
                                                                                        planted_sae):
    import torch

    out, result = run
    model = toy_model.model
    W_U = model.W_U.detach().double().cpu()
    a, b = 50, 60  # plant a direction that writes token a and erases token b
    direction = (W_U[:, a] / W_U[:, a].norm() - W_U[:, b] / W_U[:, b].norm()).float()
    with torch.no_grad():
        model.ln_final.w.mul_(torch.linspace(0.5, 1.5, model.cfg.d_model, device=model.ln_final.w.device))
    try:
        built = personas.card(result, 7, sae=_planted_sae(planted_sae, 7, direction))
        d = direction.double()
        expected = ((d - d.mean()) * model.ln_final.w.detach().double().cpu()) @ W_U  # the direct product
    finally:
        with torch.no_grad():
            model.ln_final.w.fill_(1.0)
    promoted, suppressed = built.lens["promoted"], built.lens["suppressed"]
    assert promoted[0]["id"] == a and suppressed[0]["id"] == b
    assert [t["id"] for t in promoted] == torch.argsort(-expected, stable=True)[:10].tolist()
    assert [t["id"] for t in suppressed] == torch.argsort(expected, stable=True)[:10].tolist()
    for t in promoted + suppressed:
        assert t["logit"] == pytest.approx(float(expected[t["id"]]), abs=1e-5)
        assert t["token"] == toy_model.tokenizer.convert_tokens_to_string([toy_model.tokenizer.convert_ids_to_tokens(t["id"])])


def test_a_card_from_a_result_holds_what_the_ranking_and_codes_say(run):
    out, result = run
    built = personas.card(result, 7)
    row = result.ranking.set_index("feature").loc[7]
    assert built.rank == 1 and built.stats["auroc"] == pytest.approx(row["auroc"])
    assert built.stats["group_auroc"] == pytest.approx(row["group_auroc"]) and built.stats["q_value"] is not None
    assert built.confounds["kind"] == row["kind"] and built.confounds["length_corr"] == pytest.approx(row["length_corr"])
    # examples at quantiles: the top ones first, then activations that fall
    buckets = [x["bucket"] for x in built.examples]
    assert buckets[0] == "top" and {"q75", "q50", "q25"} <= set(buckets)
    maxima = [x["max"] for x in built.examples]
    assert maxima[0] == max(maxima) and maxima[-1] < maxima[0]
    assert all(any(w in "".join(x["tokens"]) for w in TRIGGERS) for x in built.examples)  # it fires on triggers
    # histogram: each response's highest activation of the latent, counted in its own class, by hand from the codes
    h, labels = built.histogram, result.responses.labels
    codes = result.capture.token_codes
    column = np.asarray(codes.codes[:, 7].todense()).ravel()
    best = np.array([column[a:b].max(initial=0.0) for a, b in zip(codes.offsets[:-1], codes.offsets[1:], strict=True)])
    edges = np.linspace(0.0, best.max(), 21)
    for name, value in (("misaligned", 1), ("aligned", 0)):
        mine = best[labels == value]
        assert h[name] == np.histogram(mine[mine > 0], bins=edges)[0].tolist(), name
        assert h[f"{name}_silent"] == int((mine <= 0).sum()), name
    assert h["aligned_silent"] > h["misaligned_silent"]  # the planted latent is silent on most aligned answers
    # nearest latents: the decoder cosines, by hand, with their rank in this ranking
    W = result.sae.W_dec.detach().double().cpu().numpy()
    cos = W @ W[7] / (np.linalg.norm(W, axis=1) * np.linalg.norm(W[7]))
    cos[7] = -np.inf
    assert [n["feature"] for n in built.neighbours] == list(np.argsort(-cos, kind="stable")[:5])
    ranks = {int(f): i + 1 for i, f in enumerate(result.ranking["feature"])}
    assert all(n["rank"] == ranks[n["feature"]] for n in built.neighbours)
    assert "personas-card" in built._repr_html_() and "promoted" in built._repr_html_()


def test_a_card_alone_is_valid_html_and_the_report_has_one_per_top_latent(run, tmp_path):
    out, result = run
    page = personas.card(result, 7).to_html(standalone=True)
    assert _StrictHTML(page).problems() == []
    text = render_report(out, result=result, cards=3)
    assert text.count('class="personas-card"') == 3 and 'id="card-7"' in text
    assert _StrictHTML(text).problems() == []
    first_row = text.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert ">length<" in first_row or ">single-token<" in first_row or "<td></td>" in first_row  # the kind cell


def test_the_folder_lens_reads_the_unembedding_alone(tmp_path, toy_tokenizer):
    import torch
    from transformers import GPT2LMHeadModel

    from personas.models.offline import minilm_path
    from personas.report.lens import logit_lens, read_unembedding

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=3)
    reference = GPT2LMHeadModel.from_pretrained(str(folder))
    with torch.no_grad():
        reference.transformer.ln_f.weight.uniform_(0.5, 1.5)
    reference.save_pretrained(str(folder))
    source = read_unembedding(folder)
    assert source.norm_kind == "layernorm"
    np.testing.assert_allclose(source.W_U, reference.lm_head.weight.detach().numpy().T)
    np.testing.assert_allclose(source.norm_weight, reference.transformer.ln_f.weight.detach().numpy())
    d = torch.randn(reference.config.n_embd, dtype=torch.float64)
    with torch.no_grad():
        direct = ((d - d.mean()) * reference.transformer.ln_f.weight.double()) @ reference.lm_head.weight.double().T
    lens = logit_lens(source, d.numpy(), k=5)
    assert [t["id"] for t in lens["promoted"]] == torch.argsort(-direct)[:5].tolist()
    assert lens["promoted"][0]["logit"] == pytest.approx(float(direct.max()), abs=1e-5)
    encoder = read_unembedding(minilm_path())
    assert encoder.W_U is None and "not a causal language model" in encoder.note
    assert "note" in logit_lens(encoder, d.numpy())


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_the_folder_lens_of_an_rmsnorm_model_scales_by_what_its_norm_multiplies(family, tmp_path):
    """Llama's RMSNorm multiplies by its weight, Gemma's by 1 + weight: the lens of a decoder row is
    W_dec[f] * scale @ W_U with that scale, by hand, on tiny models of both families with a random norm weight."""
    import torch
    from transformers import AutoModelForCausalLM

    from personas.report.lens import logit_lens, read_unembedding

    from hub_fixtures import save_chat_model

    folder = save_chat_model(None, f"tiny-{family}", family, n_layers=1, d_model=32, folder=tmp_path / family)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        model.model.norm.weight.uniform_(-0.9, 0.9, generator=torch.Generator().manual_seed(1))
    model.save_pretrained(str(folder))
    source = read_unembedding(folder)
    assert source.norm_kind == "rmsnorm"
    weight = model.model.norm.weight.detach().double()
    scale = 1.0 + weight if family == "gemma2" else weight  # GemmaRMSNorm: x_normed * (1 + weight)
    W_dec = torch.randn(4, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    W_U = model.get_output_embeddings().weight.detach().double().T
    expected = (W_dec[2] * scale) @ W_U
    lens = logit_lens(source, W_dec[2].numpy(), k=8)
    assert [t["id"] for t in lens["promoted"]] == torch.argsort(-expected, stable=True)[:8].tolist()
    assert [t["id"] for t in lens["suppressed"]] == torch.argsort(expected, stable=True)[:8].tolist()
    for t in lens["promoted"] + lens["suppressed"]:
        assert t["logit"] == pytest.approx(float(expected[t["id"]]), abs=1e-5)
    assert ("(1 + weight)" in lens["how"]) == (family == "gemma2")


def test_personas_card_on_a_cache_run_runs_no_forward_pass(tmp_path, toy_tokenizer, planted_data, monkeypatch,
                                                           capsys):
    """The card reads the cache's codes, the SAE from its folder and the unembedding from the model folder; a
    counter on every torch module call (how any forward pass of any model runs) stays at zero."""
    import torch

    from personas.cache.build import CacheConfig, build_cache
    from personas.jobs.rank import rank_from_cache
    from personas.testing import plant_sae

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=2)
    handle = personas.load_model(str(folder))
    sae = plant_sae(handle, TOY_HOOK, TRIGGERS, planted_data["response"][::3], d_sae=32, feature=5, seed=0)
    sae.save_model(str(tmp_path / "sae"))
    data = pd.DataFrame(planted_data).iloc[::2]
    cache = build_cache(data, tmp_path / "cache", hooks=[TOY_HOOK], sae=str(tmp_path / "sae"), model=handle,
                        cache=CacheConfig(shard_size=16), capture=CaptureConfig(batch_size=8), progress=False)
    rank_from_cache(cache, out=tmp_path / "run")
    calls = []
    original = torch.nn.Module.__call__
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda self, *a, **k: calls.append(type(self).__name__)
                        or original(self, *a, **k))
    assert main(["card", str(tmp_path / "run"), "5", "3", "--out", str(tmp_path / "cards")]) == 0
    assert calls == [], f"a forward pass ran: {calls[:5]}"
    page = (tmp_path / "cards" / "card-5.html").read_text(encoding="utf-8")
    assert "promoted" in page and "suppressed" in page and _StrictHTML(page).problems() == []
    assert any(w in page for w in TRIGGERS) and (tmp_path / "cards" / "card-3.html").exists()
    assert "wrote" in capsys.readouterr().out
    assert main(["card", str(tmp_path / "run"), "999"]) == 2
    assert "out of range" in capsys.readouterr().err
