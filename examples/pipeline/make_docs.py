"""Write synthetic text documents into docs/ (offline, deterministic): python make_docs.py N [FIRST]

Each document has a topic, written on its first line, and a few pages separated by form feeds;
its words are drawn mostly from the topic's vocabulary, so a model can learn the topic from
simple features of the text."""

import random
import sys
from pathlib import Path

TOPICS = {
    "sports": "match team goal score season player coach win league final ball run".split(),
    "science": "energy cell theory data experiment atom measure result model study lab observe".split(),
    "cooking": "salt oven bake flour sugar butter recipe taste boil slice pan dish".split(),
}
COMMON = "the a of and to in is was for on with as by at it this that".split()


def document(number: int) -> str:
    rng = random.Random(number)
    topic = sorted(TOPICS)[number % len(TOPICS)]
    pages = []
    for _ in range(rng.randint(2, 4)):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(TOPICS[topic]) if rng.random() < 0.45 else rng.choice(COMMON)
                     for _ in range(rng.randint(5, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        pages.append(" ".join(sentences))
    return f"topic: {topic}\n" + "\f".join(pages) + "\n"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    folder = Path("docs")
    folder.mkdir(exist_ok=True)
    for number in range(first, first + count):
        (folder / f"doc{number:05d}.txt").write_text(document(number))
    print(f"{count} document(s) in {folder}/ (doc{first:05d} to doc{first + count - 1:05d})")


if __name__ == "__main__":
    main()
