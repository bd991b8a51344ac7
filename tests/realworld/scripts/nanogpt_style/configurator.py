"""Overrides the config globals of train.py from the command line, the way nanoGPT's
configurator.py does; train.py runs it with exec(), so it sees and sets train.py's globals:

    python train.py --batch_size=16 --max_iters=20
    python train.py config/tiny.py --dropout=0.0
"""

import sys
from ast import literal_eval

for arg in sys.argv[1:]:
    if not arg.startswith("--"):
        # a config file: plain python assignments to the same globals
        print(f"Overriding config with {arg}")
        with open(arg) as f:
            exec(f.read())
        continue
    key, _, value = arg[2:].partition("=")
    if key not in globals():
        raise ValueError(f"Unknown config key: {key}")
    try:
        parsed = literal_eval(value)  # numbers, booleans, ...
    except (SyntaxError, ValueError):
        parsed = value  # anything else is a string
    if type(parsed) is not type(globals()[key]):
        raise ValueError(f"{key}={value!r}: expected {type(globals()[key]).__name__}")
    print(f"Overriding: {key} = {parsed}")
    globals()[key] = parsed
