"""Stage 1: features of every page of every document, one keyed item each.

The document loop is incremental: a re-run with the same code and args skips the documents an
earlier run finished, so adding 10 documents to 1,000 costs the 10."""

from pathlib import Path

import flor

TOPICS = ["cooking", "science", "sports"]

docs = sorted(Path("docs").glob("*.txt"))
for doc in flor.loop("document", docs, key=lambda path: path.name, incremental=True):
    header, _, body = doc.read_text().partition("\n")
    flor.log("label", TOPICS.index(header.removeprefix("topic: ").strip()))
    for number, page in flor.loop("page", list(enumerate(body.split("\f"))), key=lambda item: item[0]):
        words = page.split()
        flor.log("n_words", len(words))
        flor.log("avg_word_len", sum(map(len, words)) / max(1, len(words)))
        flor.log("long_words", sum(len(w) >= 6 for w in words) / max(1, len(words)))
print(f"featurized {len(docs)} document(s)")
