"""Reading the inputs: labelled responses (`load_responses`) and unlabelled prompts (`load_prompts`).

* `personas.data.readers`: files to DataFrames, and the one list of accepted column names;
* `personas.data.columns`: validated ids, texts, groups and labels (a label column or judge scores);
* `personas.data.responses`: `Responses` and `load_responses`;
* `personas.data.prompts`: `Prompts` and `load_prompts` (for diffing and steering).
"""

from personas.data.prompts import Prompts, load_prompts
from personas.data.readers import read_table
from personas.data.responses import Responses, load_responses

__all__ = ["Prompts", "Responses", "load_prompts", "load_responses", "read_table"]
