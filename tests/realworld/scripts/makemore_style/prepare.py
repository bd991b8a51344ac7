"""Writes names.txt: one made-up lowercase name per line (syllables drawn from a seeded generator),
as makemore's names.txt. Deterministic."""

import random

rng = random.Random(7)
onsets = ["b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "z", "ch", "sh", "j", ""]
vowels = ["a", "e", "i", "o", "u", "ia", "ie", "y"]
codas = ["", "", "n", "l", "r", "s", "h"]
names = set()
while len(names) < 2000:
    names.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 3))))
with open("names.txt", "w") as handle:
    handle.write("\n".join(sorted(names)) + "\n")
