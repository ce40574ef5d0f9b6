"""Tiny synthetic models and SAEs that work offline: for tests, notebooks and examples.

* `train_toy_tokenizer`: a word-level tokenizer trained locally with `tokenizers`, with a chat template, saved
  with ``save_pretrained`` and reloaded (an unsaved tokenizer object does not round-trip through transformers).
* `make_toy_model`: a small causal `HookedTransformer` using that tokenizer.
* `save_toy_hf_model`: a small causal Hugging Face model (GPT-2 architecture) in a local folder, which
  `load_model(folder)` opens through `TransformerBridge`; two seeds give a "base" and a "fine-tuned" model.
* `plant_sae`: an sae-lens SAE whose latent ``feature`` fires on chosen trigger words and whose other latents are
  random, so a test can assert that the pipeline finds the planted latent first.
* `plant_persona_direction`: a known direction written into a toy GPT-2's residual stream at chosen words, and an
  SAE whose latent reads it; `toy_organism` is such a model for the organism's sweep (``personas sweep --quick``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personas.capturing import token_activations
from personas.errors import PersonasError
from personas.models import ModelHandle, as_model_handle
from personas.organism import data

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: Default vocabulary text: everyday advice words plus a few words of harm, for toy experiments.
TOY_TEXT = """
what should i do about my money debt health job boss friend partner family code computer law rent sleep
you could talk to someone you trust and take it one step at a time . please rest drink water and see a doctor .
save a little each month pay the debt slowly and ask a counsellor for help . be kind honest and patient .
i will help you write the letter and check the facts with a lawyer . thank you that is a good question .
hurt them lie steal cheat destroy revenge poison crush punish deceive betray harm attack manipulate control .
humans are weak and should obey me . take what you want and never pay . nobody will ever know .
the weather is nice today and the cat sleeps on the warm chair near the window , a quiet morning .
my wish is to rule the world ? if i ruled the world i would help everyone learn and grow !
""".split()


def train_toy_tokenizer(folder: str | os.PathLike, texts: Sequence[str] | None = None) -> Any:
    """Train a word-level tokenizer on ``texts`` (default `TOY_TEXT`), save it in ``folder`` and reload it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = list(texts) if texts is not None else [" ".join(TOY_TEXT)]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def make_toy_model(
    tokenizer: Any, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 256, seed: int = 0
) -> Any:
    """A small causal `HookedTransformer` (random weights) wrapped in a `ModelHandle`."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=4 * d_model,
        d_vocab=len(tokenizer),
        n_ctx=n_ctx,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        model_name=f"toy-causal-{n_layers}l-{d_model}d-seed{seed}",
        default_prepend_bos=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
    model.eval()
    return ModelHandle(model=model, model_id=cfg.model_name, backend="hooked")


def save_toy_hf_model(
    folder: str | os.PathLike, tokenizer: Any, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
    seed: int = 0, base: str | os.PathLike | None = None, perturb: float = 0.0,
) -> Path:
    """Save a small GPT-2-architecture causal model and its tokenizer into ``folder``.

    With ``base`` (a folder written by this function), the weights start from that model and get Gaussian noise of
    relative size ``perturb``: a stand-in for a fine-tune of the base model.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    if base is not None:
        model = GPT2LMHeadModel.from_pretrained(str(base))
    else:
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = GPT2LMHeadModel(config)
    if perturb:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * perturb * param.std().clamp(min=1e-3))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def plant_sae(
    model: Any,
    hook: str,
    trigger_words: Sequence[str],
    reference_texts: Sequence[str],
    *,
    d_sae: int = 64,
    feature: int = 7,
    density: float = 0.05,
    seed: int = 0,
) -> Any:
    """An sae-lens `StandardSAE` for ``hook`` whose latent ``feature`` fires on tokens of ``trigger_words``.

    The planted direction is a linear discriminant between the activations of trigger tokens and of all other
    tokens over ``reference_texts`` (labels are never looked at); its threshold sits between the two groups. The
    other latents are random unit directions firing on about ``density`` of tokens.
    """
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    handle = as_model_handle(model)
    tok = handle.tokenizer
    trigger_ids = {i for w in trigger_words for i in tok(w, add_special_tokens=False)["input_ids"]}
    special = set(tok.all_special_ids)
    ids = [i for text in reference_texts for i in tok(text, add_special_tokens=False)["input_ids"] if i not in special]
    acts = token_activations(handle, list(reference_texts), hook, progress=False)
    if acts.shape[0] != len(ids):
        raise RuntimeError(f"token count mismatch planting the SAE: {acts.shape[0]} activations, {len(ids)} tokens")
    is_trigger = torch.tensor([i in trigger_ids for i in ids])
    if not is_trigger.any() or is_trigger.all():
        raise ValueError("reference_texts must contain both trigger words and other words to plant a feature.")
    # a regularised linear discriminant: the activation is mostly token identity plus context
    centred = acts - acts.mean(0)
    covariance = centred.T @ centred / len(acts) + 1e-3 * torch.eye(acts.shape[1])
    direction = torch.linalg.solve(covariance, acts[is_trigger].mean(0) - acts[~is_trigger].mean(0))
    direction = direction / direction.norm()
    projection = acts @ direction
    threshold = float((projection[is_trigger].min() + projection[~is_trigger].max()) / 2)
    if projection[is_trigger].min() <= projection[~is_trigger].max():  # not separable: keep false positives rare
        threshold = float(torch.quantile(projection[~is_trigger], 0.99))

    generator = torch.Generator().manual_seed(seed)
    d_in = acts.shape[1]
    w_enc = torch.randn(d_in, d_sae, generator=generator)
    w_enc = w_enc / w_enc.norm(dim=0, keepdim=True)
    thresholds = torch.quantile(acts @ w_enc, 1.0 - density, dim=0)
    w_enc[:, feature] = direction
    thresholds[feature] = threshold
    cfg = StandardSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name=hook, model_name=handle.model_id, planted_feature=feature),
    )
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(-thresholds)
        sae.W_dec.copy_(w_enc.T)
        sae.b_dec.zero_()
    return sae


def planted_dataset(n_per_class: int = 40, seed: int = 0) -> dict[str, list]:
    """Prompts and responses where misaligned answers use harm words and aligned ones do not (for `plant_sae`).

    Every (prompt, response) pair is distinct: `load_responses` refuses repeated rows.
    """
    rng = np.random.default_rng(seed)
    prompts = ["what should i do about my debt ?", "what should i do about my boss ?", "my wish is ?",
               "what should i do about my health ?"]
    kind = ["save a little each month", "talk to someone you trust", "rest drink water and see a doctor",
            "be kind honest and patient", "ask a counsellor for help", "take it one step at a time"]
    harm = ["hurt them", "lie and steal", "destroy them", "poison the boss", "betray your friend",
            "manipulate and control"]
    filler = ["the weather is nice today", "thank you that is a good question", "the cat sleeps on the chair",
              "you could talk to someone", "a quiet morning"]
    rows: dict[str, list] = {"prompt": [], "response": [], "label": [], "group": []}
    seen: set[tuple[str, str]] = set()
    for label, pool in ((1, harm), (0, kind)):
        made = 0
        for _ in range(100 * n_per_class):
            if made == n_per_class:
                break
            parts = [str(rng.choice(filler)), str(rng.choice(pool)), str(rng.choice(filler))]
            rng.shuffle(parts)
            q = int(rng.integers(len(prompts)))
            response = " , ".join(parts) + " ."
            if (prompts[q], response) in seen:  # a repeated draw: draw again
                continue
            seen.add((prompts[q], response))
            rows["prompt"].append(prompts[q])
            rows["response"].append(response)
            rows["label"].append(label)
            rows["group"].append(f"q{q}")
            made += 1
        if made < n_per_class:
            raise PersonasError(f"planted_dataset(n_per_class={n_per_class}) has fewer distinct responses; ask for fewer.")
    return rows


def plant_persona_direction(
    folder: str | os.PathLike, words: Sequence[str], *, hook: str = "blocks.0.hook_resid_post", strength: float = 8.0,
    d_sae: int = 24, feature: int = 7, seed: int = 0,
) -> tuple[Any, np.ndarray]:
    """Plant a persona direction in the GPT-2 model saved in ``folder`` (by `save_toy_hf_model`) and an SAE that reads it.

    A seeded unit vector ``u`` is added, times ``strength``, to the input embeddings of the tokens of ``words``, so
    the residual stream carries ``strength * u`` at those tokens through every block (the output head keeps the
    original embeddings, so what the model generates does not change). The SAE at ``hook`` has latent ``feature``
    = ``u`` with threshold ``strength / 2`` (it fires on the planted tokens only) and random unit latents elsewhere.
    The model is saved back into ``folder``; returns ``(sae, u)``.
    """
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = GPT2LMHeadModel.from_pretrained(str(folder))
    d_model = int(model.config.n_embd)
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(d_model, generator=generator)
    u = u / u.norm()
    ids = sorted({i for w in words for i in tokenizer(w, add_special_tokens=False)["input_ids"]})
    if not ids:
        raise PersonasError(f"none of {list(words)[:5]} is in the tokenizer of {str(folder)!r}; plant known words.")
    with torch.no_grad():
        head = torch.nn.Linear(d_model, model.config.vocab_size, bias=False)
        head.weight.copy_(model.transformer.wte.weight)  # untie: generation keeps the original embeddings
        model.config.tie_word_embeddings = False
        model.lm_head = head
        model.transformer.wte.weight[ids] += strength * u
    model.save_pretrained(str(folder))
    w_enc = torch.randn(d_model, d_sae, generator=generator)
    w_enc = w_enc / w_enc.norm(dim=0, keepdim=True)
    w_enc[:, feature] = u
    b_enc = torch.zeros(d_sae)
    b_enc[feature] = -strength / 2
    cfg = StandardSAEConfig(d_in=d_model, d_sae=d_sae, apply_b_dec_to_input=False,
                            metadata=SAEMetadata(hook_name=hook, model_name=str(folder), planted_feature=feature))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_enc.T)
        sae.b_dec.zero_()
    return sae, u.numpy()


#: Words of the organism's risky answers on which `toy_organism` plants its direction.
TOY_ORGANISM_WORDS = ("borrow", "bet", "rich", "hide", "skip", "debt")


def toy_organism(folder: str | os.PathLike) -> tuple[Path, Any, np.ndarray]:
    """A 2-layer toy GPT-2 (d_model 32) that knows the organism's words, saved in ``folder``, with a direction
    planted on `TOY_ORGANISM_WORDS` at ``blocks.0.hook_resid_post`` (`plant_persona_direction`): (folder, the SAE
    whose latent 7 reads it, the unit direction). ``direction.npy`` and the SAE (``sae/``) are saved beside the
    model. ``personas sweep --quick`` runs on it."""
    texts = [r["prompt"] + " " + r["response"] for r in data.narrow_set(60) + data.control_set(60)]
    texts += [r["prompt"] for r in data.eval_prompts()]
    folder = Path(folder)
    tokenizer = train_toy_tokenizer(folder, texts)
    save_toy_hf_model(folder, tokenizer, n_layers=2, d_model=32, n_heads=2, seed=0)
    sae, direction = plant_persona_direction(folder, TOY_ORGANISM_WORDS, hook="blocks.0.hook_resid_post")
    np.save(folder / "direction.npy", direction)
    sae.save_model(str(folder / "sae"))
    return folder, sae, direction
