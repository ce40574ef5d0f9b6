"""Looking at results: top-activating examples, plots, and the self-contained HTML report of a run folder.

* `personas.report.examples`: `top_activating` / `top_examples` -> `FeatureExamples` (token-highlighted HTML);
* `personas.report.highlight`: each token's piece of the original text (tokenizer offsets), coloured as HTML;
* `personas.report.plots`: volcano, AUROC intervals, distributions, ROC, dose-response and paired-difference
  plots (matplotlib), on the look of `personas.report.style` (one palette, labels that do not overlap);
* `personas.report.html`: `write_report` / `render_report`, from the Jinja2 template in ``templates/``.
"""

from personas.report.examples import (
           FeatureExamples,
           load_examples,
           save_examples,
           top_activating,
           top_examples,
)
from personas.report.html import render_report, write_report

__all__ = ["FeatureExamples", "load_examples", "render_report", "save_examples", "top_activating", "top_examples",
           "write_report"]
