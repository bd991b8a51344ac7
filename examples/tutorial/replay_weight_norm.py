"""Tutorial step: add a hindsight statement to today's train.py (what a user does by hand).

    python replay_weight_norm.py train.py && flor replay weight_norm

It inserts, after the step loop, a log of the weight norm at the end of every epoch.
"""

import sys
from pathlib import Path

ANCHOR = '            flor.log("loss", loss.item())\n'
STATEMENT = '        flor.log("weight_norm", sum(p.norm() ** 2 for p in net.parameters()).item() ** 0.5)\n'

path = Path(sys.argv[1] if len(sys.argv) > 1 else "train.py")
text = path.read_text()
if STATEMENT in text:
    print(f"{path} already logs weight_norm")
elif ANCHOR not in text:
    sys.exit(f"cannot find the step loop's flor.log('loss', ...) in {path}")
else:
    path.write_text(text.replace(ANCHOR, ANCHOR + STATEMENT, 1))
    print(f"added to {path}: {STATEMENT.strip()}")
