"""A fake LLM for the explainer's and scorers' tests, served by the judge tests' loopback server (`judge_server`).

It reads the prompts of `personas.explaining` the way a careful but literal model would: asked for an explanation,
it names the words most often marked <<like this>> in the ACTIVE passages; asked for detection verdicts, it says 1
for a passage that contains a word of the explanation; asked for fuzzing verdicts, 1 when a marked token is such a
word. Every reply carries ``usage`` (tokens counted by ``count_tokens``: words by default) as a real server's does.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from judge_server import completion

OK = 200


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def explanation_of(prompt: str) -> str:
    """The fake explainer's reply: the words marked most often among the active passages."""
    active = prompt.split("\nACTIVE\n", 1)[1].split("\nSILENT\n", 1)[0]
    marked = Counter(m.strip().lower() for m in re.findall(r"<<(.*?)>>", active))
    top = [w for w, _ in marked.most_common(4) if re.fullmatch(r"[a-z]+", w)]
    return "Explanation: the latent responds to the words " + ", ".join(top) + "."


def verdicts(prompt: str) -> str:
    """The fake scorer's reply: one "N: 0/1" line per passage."""
    explanation = re.search(r'\n"(.*)"\n', prompt).group(1)
    keys = words(explanation) - {"the", "latent", "responds", "to", "words", "answers", "and", "of", "a"}
    passages = re.findall(r"(?m)^(\d+)\. (.*)$", prompt.split("\n\n", 3)[-1])
    fuzzing = "marked <<like this>>" in prompt
    lines = []
    for number, text in passages:
        seen = words(" ".join(re.findall(r"<<(.*?)>>", text))) if fuzzing else words(text)
        lines.append(f"{number}: {1 if seen & keys else 0}")
    return "\n".join(lines)


def reply_to(content: str) -> str:
    if "\nACTIVE\n" in content:
        return explanation_of(content)
    return verdicts(content)


def fake_llm(count_tokens: Callable[[str], int] = lambda text: len(text.split()),
             fail: Callable[[dict[str, Any], int], Any] | None = None) -> Callable[[dict[str, Any], int], Any]:
    """A `judge_server.JudgeServer` script; ``fail(body, index)`` may return a reply to send instead."""

    def script(body: dict[str, Any], index: int):
        if fail is not None:
            instead = fail(body, index)
            if instead is not None:
                return instead
        content = body["messages"][0]["content"]
        text = reply_to(content)
        reply = completion(text)
        reply["usage"] = {"prompt_tokens": count_tokens(content), "completion_tokens": count_tokens(text),
                          "total_tokens": count_tokens(content) + count_tokens(text)}
        return OK, {}, reply, 0.0

    return script
