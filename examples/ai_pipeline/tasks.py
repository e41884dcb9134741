"""The four stages of the document pipeline, each on a queue of its own.

The "models" are stand-ins (deterministic text processing and short sleeps), so the example
runs anywhere; the queueing around them is real. Each stage is a plain Conveyor task:

- ``extract`` (queue ``extract``): markup stripped, whitespace collapsed.
- ``analyze`` (queue ``analyze``): sentences, word count, keywords.
- ``summarize`` (queue ``summarize``): a generator task, as an LLM streams; each token it
  yields is readable at once (``job.stream()``, SSE), and its return value, the summary, is
  the next step's argument.
- ``embed`` (queue ``embed``): a micro-batch task (``batch_size``), as a GPU model wants: one
  call embeds the summaries of up to 16 documents, each job still ends on its own.

Work it:  conveyor worker examples.ai_pipeline.tasks:app -q summarize -c 8   (one per stage,
          or several stages per process: -q extract,analyze,summarize,embed -c 20)
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Generator
from typing import Any

from conveyor import Conveyor
from conveyor.workflows import Chain

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-ai-pipeline-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)

#: The stage queues, in pipeline order (each is also the name of its task).
STAGES = ("extract", "analyze", "summarize", "embed")
#: Seconds between two summary tokens: how fast the stand-in "LLM" writes.
TOKEN_DELAY = float(os.environ.get("AI_PIPELINE_TOKEN_DELAY", "0.05"))
#: Length of the stand-in embedding vectors.
DIMENSIONS = 8
#: Words a summary of the stand-in keeps at most.
SUMMARY_WORDS = 24

_STOPWORDS = (
    "a an and are as at be but by for from has have in is it its of on or that the this to "
    "was were will with which not can into their them they than then there these so"
)
_STOP = frozenset(_STOPWORDS.split())


# -- the stand-in models (pure functions: a test computes what the pipeline must produce) ------
def clean(document: str) -> str:
    """Text of a document: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]*>", " ", document).split())


def study(text: str) -> dict[str, Any]:
    """Sentences, word count and the five most frequent content words."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    words = re.findall(r"[a-z][a-z'-]*", text.lower())
    common = Counter(w for w in words if w not in _STOP and len(w) > 2).most_common(5)
    return {"sentences": sentences, "words": len(words), "keywords": [w for w, _ in common]}


def summary_tokens(analysis: dict[str, Any]) -> list[str]:
    """The summary, token by token: the sentences richest in keywords, in document order."""
    keywords = set(analysis["keywords"])
    sentences: list[str] = analysis["sentences"]

    def score(i: int) -> tuple[int, int]:
        found = {w.strip(".,;:!?\"'()").lower() for w in sentences[i].split()}
        return (len(found & keywords), -i)

    chosen = sorted(sorted(range(len(sentences)), key=score, reverse=True)[:2])
    words = " ".join(sentences[i] for i in chosen).split()
    return words[:SUMMARY_WORDS]


def vector(text: str) -> list[float]:
    """A deterministic unit vector from the words of ``text`` (hashed into buckets)."""
    buckets = [0.0] * DIMENSIONS
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=2).digest()
        buckets[digest[0] % DIMENSIONS] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(b * b for b in buckets)) or 1.0
    return [round(b / norm, 6) for b in buckets]


# -- the tasks: one stage queue each ---------------------------------------------------------
@app.task(queue="extract", retries=3)
def extract(document: str) -> str:
    time.sleep(0.02)  # the parser
    return clean(document)


@app.task(queue="analyze", retries=3)
def analyze(text: str) -> dict[str, Any]:
    time.sleep(0.02)  # the classifier
    return study(text)


@app.task(queue="summarize", retries=3, timeout=120)
def summarize(analysis: dict[str, Any]) -> Generator[str, None, str]:
    """Streams the summary as an LLM would, one token at a time; returns the whole of it.

    A sync generator: it runs in a worker thread, its return value is the job's result (an
    async generator's would be None). A run cut short (worker killed) starts again from its
    first token on another worker; readers are told (SSE ``restart``)."""
    tokens = summary_tokens(analysis)
    for token in tokens:
        time.sleep(TOKEN_DELAY)
        yield token
    return " ".join(tokens)


@app.task(queue="embed", retries=3, batch_size=16, batch_wait=0.05)
def embed(summaries: list[str]) -> list[list[float]]:
    """One call for up to 16 documents' summaries, as a GPU forward pass would be."""
    time.sleep(0.02)
    return [vector(s) for s in summaries]


def pipeline(document: str) -> Chain:
    """extract -> analyze -> summarize -> embed, one chain: each result is the next step's
    argument, each step runs on its stage's queue, and the handoffs are exactly once."""
    return extract.s(document) | analyze.s() | summarize.s() | embed.s()
