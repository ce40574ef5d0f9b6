"""Quiet third-party chatter while models and SAEs load, and leave personas' own messages alone.

Loading a model through transformers and TransformerLens prints progress bars ("Loading weights", "Writing model
shards") and deprecation warnings that a user of personas cannot act on (``HookedTransformer is deprecated``, sae-lens
importing ``transformer_lens.utils``). In a notebook the usual cure, ``warnings.filterwarnings("ignore")`` plus
silencing loggers, also hides the warnings personas raises on purpose (a confounded split, length that separates the
classes). `quiet_third_party` instead silences exactly that chatter, and only inside its ``with`` block:

* the progress bars of transformers and huggingface_hub (restored as they were on exit);
* transformers' own logger, set to errors only (restored on exit);
* the deprecation warnings of TransformerLens, sae-lens and transformers, matched by message or by module.

personas' progress bars (capture, cache, generation) are not affected: they follow the ``progress=`` argument.
`TokenRate` is that bar: items done and the tokens per second so far, and one INFO log line with the rate at the end.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

__all__ = ["QUIET_WARNINGS", "TokenRate", "quiet_third_party"]

logger = logging.getLogger(__name__)

#: Warnings hidden inside `quiet_third_party`: (message regex, category). The messages are the library's own;
#: a warning with another message still shows.
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"HookedTransformer(\.from_pretrained)? is deprecated", DeprecationWarning),
    (r"HookedRootModule is deprecated", DeprecationWarning),
    (r"Importing HookedRootModule from transformer_lens", DeprecationWarning),
    (r"The 'utils' module has been deprecated", DeprecationWarning),
)
#: Modules whose deprecation and future warnings are hidden inside `quiet_third_party`.
QUIET_MODULES = r"(transformer_lens|sae_lens|transformers|huggingface_hub|torch)(\.|$)"
#: Standard-library loggers of the loaders, raised to WARNING inside `quiet_third_party`.
QUIET_LOGGERS = ("transformer_lens", "sae_lens", "huggingface_hub", "httpx", "urllib3", "filelock")


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Inside the block, hide the loading progress bars, info logs and deprecation warnings of transformers,
    huggingface_hub, TransformerLens and sae-lens; everything is restored on exit, also after an exception.

    Used by personas where it loads models and SAEs; usable around your own loading code too::

        with personas.logs.quiet_third_party():
            bridge = TransformerBridge.boot_transformers("my/model")
    """
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        for message, category in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=QUIET_MODULES)
        stack.callback(_restore_levels, {name: logging.getLogger(name).level for name in QUIET_LOGGERS})
        for name in QUIET_LOGGERS:
            if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
                logging.getLogger(name).setLevel(logging.WARNING)
        stack.enter_context(_quiet_huggingface())
        yield


def _restore_levels(levels: dict[str, int]) -> None:
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@contextmanager
def _quiet_huggingface() -> Iterator[None]:
    """transformers' verbosity and progress bars, and huggingface_hub's bars, off inside the block."""
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )
        from transformers.utils import logging as hf_logging
    except ImportError:  # neither is needed for a capture from a cache; nothing to quiet
        yield
        return
    hub_bars = not are_progress_bars_disabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # also disables huggingface_hub's bars
    disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()  # re-enables huggingface_hub's bars too
        if hub_bars:
            enable_progress_bars()
        elif not are_progress_bars_disabled():
            disable_progress_bars()


class TokenRate:
    """A progress bar over items (responses, answers) that shows the tokens per second so far, shown only when
    ``enabled``; `close` logs the rate (INFO) either way, so a log file records it when no bar is drawn."""

    def __init__(self, desc: str, total: int, enabled: bool, unit: str = "resp") -> None:
        from tqdm.auto import tqdm

        self.desc = desc
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
        self.tokens = 0
        self.start = time.perf_counter()

    @property
    def rate(self) -> float:
        """Tokens per second since the start."""
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)

    def update(self, items: int, tokens: int) -> None:
        """``items`` more done, with ``tokens`` tokens between them."""
        self.tokens += int(tokens)
        self.bar.set_postfix_str(f"{self.rate:.0f} tok/s", refresh=False)
        self.bar.update(items)

    def close(self) -> None:
        """Close the bar and log the rate."""
        self.bar.close()
        if self.tokens:
            logger.info("%s: %d tokens in %.1f s (%.0f tokens/s)", self.desc, self.tokens,
                        time.perf_counter() - self.start, self.rate)
