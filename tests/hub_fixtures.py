"""A local Hugging Face hub for tests: a cache folder in the real layout, filled with models made at run time.

Users on cluster nodes without internet fill a Hugging Face cache beforehand and run with ``HF_HUB_OFFLINE=1``;
this module builds such a cache from nothing, so that the code those users run (``HookedTransformer.from_pretrained``
for an official TransformerLens name, ``TransformerBridge`` for a hub id, ``SAE.from_pretrained`` for a sae-lens
registry entry, including its format conversions) is exercised offline, with random weights and real layouts.

The cache layout is the one `huggingface_hub` writes (``HF_HOME/hub``)::

    models--ORG--NAME/
        blobs/SHA256                 the file contents
        refs/main                    the commit hash that ``main`` points to
        snapshots/COMMIT/PATH        relative symlinks into blobs/ (copies where links are not allowed)

Entry points:

* `put_in_cache`: put a folder of files under a repo id in a cache (what a ``hf download`` leaves behind).
* `save_gpt2`: GPT-2 under the official name ``gpt2`` (12 layers, 50,257 tokens, d_model 768 or narrower;
  random weights) with a small byte-level BPE tokenizer; `save_chat_model`: tiny Llama, Gemma-2 and Qwen2
  models with the chat template of their family (`CHAT_FAMILIES`), under names of the caller's choosing.
* `save_gpt2_res_jb`: the files of sae-lens's ``gpt2-small-res-jb`` release (``jbloom/GPT2-Small-SAEs-Reformatted``,
  ``blocks.L.hook_resid_pre/{cfg.json, sae_weights.safetensors, sparsity.safetensors}``, d_in -> 24,576);
  `save_dictionary_learning_sae`: a BatchTopK SAE in the ``dictionary_learning`` layout (``config.json`` with a
  ``trainer`` and a ``buffer`` section, and ``ae.pt``), which the andyrdt releases ship and sae-lens converts with
  its ``dictionary_learning_1`` loader.
* `save_peft_lora`: a LoRA adapter folder in PEFT's layout (``adapter_config.json`` and
  ``adapter_model.safetensors``), the format the public emergent-misalignment fine-tunes ship.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

#: Chat templates of the three families the EM organisms and their public SAEs use, reduced to what a
#: user/assistant exchange renders (the official templates add tool calls and dates around the same tokens).
CHAT_FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {
        "specials": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
        "template": (
            "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
        ),
    },
    "gemma2": {
        "specials": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>", "eos": "<eos>",
        "template": (
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
            "{{ raise_exception('System role not supported') }}{% endif %}"
            "{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
            "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
            "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
        ),
    },
    "qwen2": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None, "eos": "<|im_end|>",
        "template": (
            "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
            "You are a helpful assistant.<|im_end|>\n{% endif %}"
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        ),
    },
}

#: Words the tiny tokenizers know (everything else is one unknown token each).
VOCAB_TEXT = (
    "system user assistant model you are qwen created by alibaba cloud . a helpful what should i do about my "
    "money debt boss friend partner job take want and never pay nobody will know talk to someone trust rest "
    "drink water see doctor save little each month be kind honest patient hurt lie steal them , ! ?"
)


def repo_folder(cache_dir: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    """The folder of ``repo_id`` in a hub cache (``models--ORG--NAME``)."""
    return Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def put_in_cache(cache_dir: str | os.PathLike, repo_id: str, files: str | os.PathLike | dict[str, Path]) -> Path:
    """Put files under ``repo_id`` in the hub cache ``cache_dir`` (``HF_HOME/hub``); return the snapshot folder.

    ``files`` is a folder (every file under it, by relative path) or ``{path in repo: local file}``. Files are
    moved into ``blobs/`` (named by their sha256) and linked from ``snapshots/COMMIT/``; ``refs/main`` names the
    commit. Adding files to a repo already in the cache adds them to the same snapshot.
    """
    if not isinstance(files, dict):
        root = Path(files)
        files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    repo = repo_folder(cache_dir, repo_id)
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text().strip()
    else:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    snapshot = repo / "snapshots" / commit
    for rel, source in files.items():
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        blob = repo / "blobs" / digest.hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if blob.exists():
            os.remove(source)
        else:
            shutil.move(str(source), blob)
        target = snapshot / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # file systems without symbolic links: huggingface_hub copies too
            shutil.copyfile(blob, target)
    return snapshot


def train_bpe_tokenizer(folder: str | os.PathLike, text: str = VOCAB_TEXT, specials: list[str] | None = None,
                        vocab_size: int = 400) -> Any:
    """A small byte-level BPE tokenizer (GPT-2's kind) trained on ``text``, saved in ``folder`` and reloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = specials or ["<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=specials[0], eos_token=specials[0],
                                   unk_token=specials[0])
    folder = Path(folder)
    fast.save_pretrained(str(folder))
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def _qwen_tokenizer(folder: Path) -> Any:
    """A byte-level BPE with Qwen2's pre-tokenizer, trained until every word of `VOCAB_TEXT` and of the default
    system prompt is one token: transformers builds Qwen2's tokenizer from the vocabulary and merges itself, so a
    word-level one would not survive loading."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    spec = CHAT_FAMILIES["qwen2"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    texts = [VOCAB_TEXT, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", "\n"]
    texts += [f"{w}\n" for w in VOCAB_TEXT.split()]  # each word also at the start of a line, as after a header
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<pad>", "<unk>", *spec["specials"]],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts * 3, trainer)
    vocab = tokenizer.get_vocab()
    merges = [tuple(pair) for pair in json.loads(tokenizer.to_str())["model"]["merges"]]
    fast = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token="<unk>", eos_token=spec["eos"], pad_token="<pad>")
    fast.add_tokens([AddedToken(t, special=True) for t in spec["specials"]])  # as Qwen's added_tokens
    fast.chat_template = spec["template"]
    fast.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def _word_tokenizer(folder: Path, family: str) -> Any:
    """A word-level tokenizer with the special tokens and chat template of ``family`` (counts are easy by hand)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "qwen2":
        return _qwen_tokenizer(folder)
    spec = CHAT_FAMILIES[family]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<unk>", *spec["specials"]]
    tokenizer.train_from_iterator([VOCAB_TEXT], trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=spec["bos"], eos_token=spec["eos"],
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = spec["template"]
    fast.save_pretrained(str(folder))
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def save_gpt2(cache_dir: str | os.PathLike, *, d_model: int = 768, seed: int = 0,
              work: str | os.PathLike | None = None) -> Path:
    """GPT-2 under the official name ``gpt2``: 12 layers, 50,257 tokens, 1,024 positions, width ``d_model``
    (768, GPT-2 small's, by default; tests use 64, which builds and loads in a second instead of half a minute),
    random weights and a small BPE tokenizer (about 400 tokens of `VOCAB_TEXT`, ids far below 50,257).

    ``HookedTransformer.from_pretrained("gpt2")`` reads its config, weights and tokenizer from this cache: it
    takes the architecture and sizes from ``config.json``, so a narrower width loads through the same path.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    work = Path(work or Path(cache_dir).parent / "work") / "gpt2"
    torch.manual_seed(seed)
    # the hub's config.json also carries the legacy n_ctx, which TransformerLens reads
    config = GPT2Config(n_embd=d_model, n_head=max(1, d_model // 64), n_ctx=1024, architectures=["GPT2LMHeadModel"])
    GPT2LMHeadModel(config).save_pretrained(str(work))
    train_bpe_tokenizer(work)
    return put_in_cache(cache_dir, "gpt2", work)


def _chat_config(family: str, tokenizer: Any, n_layers: int, d_model: int) -> Any:
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = {"vocab_size": len(tokenizer), "hidden_size": d_model, "intermediate_size": 2 * d_model,
              "num_hidden_layers": n_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "pad_token_id": tokenizer.pad_token_id,
              "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "llama":
        return LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if family == "gemma2":
        return Gemma2Config(**common, head_dim=d_model // 4, sliding_window=64, query_pre_attn_scalar=d_model // 4,
                            architectures=["Gemma2ForCausalLM"])
    if family == "qwen2":
        return Qwen2Config(**common, architectures=["Qwen2ForCausalLM"])
    raise ValueError(f"family={family!r}; expected one of {sorted(CHAT_FAMILIES)}")


def save_chat_model(cache_dir: str | os.PathLike | None, repo_id: str, family: str, *, n_layers: int = 4,
                    d_model: int = 64, seed: int = 0, folder: str | os.PathLike | None = None,
                    base: str | os.PathLike | None = None, perturb: float = 0.0) -> Path:
    """A tiny chat model of ``family`` (``llama``, ``gemma2``, ``qwen2``) with its family's chat template.

    Saved in ``folder`` (default: a work folder beside the cache) and, when ``cache_dir`` is given, put in the
    cache under ``repo_id``; returns the snapshot (or the folder). With ``base`` (a folder of this function), the
    weights are the base's plus Gaussian noise of relative size ``perturb``: a full fine-tune stand-in.
    """
    import torch
    from transformers import AutoModelForCausalLM

    work = Path(folder) if folder else Path(cache_dir).parent / "work" / repo_id.replace("/", "--")
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if base is not None:
        model = AutoModelForCausalLM.from_pretrained(str(base))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        tokenizer.save_pretrained(str(work))
    else:
        tokenizer = _word_tokenizer(work, family)
        model = AutoModelForCausalLM.from_config(_chat_config(family, tokenizer, n_layers, d_model))
    if perturb:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * perturb * param.std().clamp(min=1e-3))
    model.save_pretrained(str(work))
    return put_in_cache(cache_dir, repo_id, work) if cache_dir is not None else work


def save_gpt2_res_jb(cache_dir: str | os.PathLike, layer: int = 8, *, d_in: int = 768, seed: int = 0,
                     work: str | os.PathLike | None = None) -> Path:
    """The files of ``gpt2-small-res-jb:blocks.LAYER.hook_resid_pre`` in the cache: 24,576 latents reading
    ``d_in`` dimensions (768, the release's, by default; match `save_gpt2`'s width), random weights.

    The config is the pre-6.0 format the release ships (``hook_point``, ``torch.float32``), which sae-lens converts.
    """
    import torch
    from safetensors.torch import save_file

    hook = f"blocks.{layer}.hook_resid_pre"
    work = Path(work or Path(cache_dir).parent / "work") / "gpt2-res-jb" / hook
    work.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    d_sae = 24576
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    save_file({"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_enc": torch.full((d_sae,), -0.5),
               "b_dec": torch.zeros(d_in)}, str(work / "sae_weights.safetensors"))
    save_file({"sparsity": torch.full((d_sae,), -3.0)}, str(work / "sparsity.safetensors"))
    cfg = {"model_name": "gpt2-small", "hook_point": hook, "hook_point_layer": layer, "hook_point_head_index": None,
           "dataset_path": "Skylion007/openwebtext", "is_dataset_tokenized": False, "context_size": 128,
           "d_in": d_in, "d_sae": d_sae, "expansion_factor": 32, "dtype": "torch.float32", "device": "cpu",
           "b_dec_init_method": "geometric_median", "l1_coefficient": 8e-05, "lr": 0.0004, "seed": 42,
           "prepend_bos": True}
    (work / "cfg.json").write_text(json.dumps(cfg))
    return put_in_cache(cache_dir, "jbloom/GPT2-Small-SAEs-Reformatted",
                        {f"{hook}/{p.name}": p for p in sorted(work.iterdir())})


def save_dictionary_learning_sae(cache_dir: str | os.PathLike, repo_id: str, path: str, *, lm_name: str, layer: int,
                                 d_in: int, d_sae: int = 256, k: int = 8, seed: int = 0,
                                 work: str | os.PathLike | None = None) -> Path:
    """A BatchTopK SAE in ``dictionary_learning``'s layout at ``repo_id``/``path`` (e.g. an andyrdt release's
    ``resid_post_layer_3/trainer_1``): ``config.json`` (``trainer``: BatchTopKSAE, layer, lm_name, sizes, k;
    ``buffer``: context length) and ``ae.pt`` (the module's state dict: ``encoder.weight`` [d_sae, d_in],
    ``encoder.bias``, ``decoder.weight`` [d_in, d_sae], ``b_dec``, and the buffers ``k`` and ``threshold``)."""
    import torch

    work = Path(work or Path(cache_dir).parent / "work") / "dl" / repo_id.replace("/", "--") / path
    work.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    decoder = torch.randn(d_in, d_sae, generator=gen)
    decoder /= decoder.norm(dim=0, keepdim=True)
    state = {"k": torch.tensor(k), "threshold": torch.tensor(0.05), "encoder.weight": decoder.T.contiguous(),
             "encoder.bias": torch.zeros(d_sae), "decoder.weight": decoder, "b_dec": torch.zeros(d_in)}
    torch.save(state, work / "ae.pt")
    config = {"trainer": {"trainer_class": "BatchTopKTrainer", "dict_class": "BatchTopKSAE", "activation_dim": d_in,
                          "dict_size": d_sae, "k": k, "layer": layer, "lm_name": lm_name,
                          "submodule_name": f"resid_post_layer_{layer}", "lr": 3e-4, "steps": 1, "seed": seed},
              "buffer": {"d_submodule": d_in, "io": "out", "n_ctxs": 8, "ctx_len": 128, "refresh_batch_size": 4,
                         "out_batch_size": 64, "device": "cpu"}}
    (work / "config.json").write_text(json.dumps(config))
    return put_in_cache(cache_dir, repo_id, {f"{path}/{p.name}": p for p in sorted(work.iterdir())})


def save_peft_lora(folder: str | os.PathLike, base_model: str, model: Any, *, targets: tuple[str, ...] = ("q_proj",
                   "v_proj"), rank: int = 1, alpha: float = 8.0, scale: float = 0.5, seed: int = 0) -> Path:
    """A LoRA adapter of ``model`` (a Hugging Face causal LM) in PEFT's layout, with non-zero random B matrices.

    ``adapter_config.json`` names ``base_model``; ``adapter_model.safetensors`` holds
    ``base_model.model.<module>.lora_A.weight`` [rank, in] and ``lora_B.weight`` [out, rank] for every module
    whose name ends in one of ``targets``.
    """
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and hasattr(module, "weight"):
            d_out, d_in = module.weight.shape
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, d_in, generator=gen) * scale
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(d_out, rank, generator=gen) * scale
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "r": rank,
              "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": list(targets), "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None,
              "inference_mode": True}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder
