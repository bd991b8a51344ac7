"""Add a hindsight feature to featurize.py: flor.log("n_sentences", ...) after the n_words line."""

import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "featurize.py")
text = path.read_text()
line = '        flor.log("n_words", len(words))\n'
new = '        flor.log("n_sentences", page.count("."))\n'
if new not in text:
    path.write_text(text.replace(line, line + new))
print(f"{path}: logs n_sentences (not yet recorded: `flor replay n_sentences` recovers it for past runs)")
