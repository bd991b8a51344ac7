"""Recording: a run from its first flor call to its end (``run``), where the script is among its loops
(``loopcontext``), what it prints (``capture``), its arguments (``args``, ``argparsing``), keyed loops
(``keyed``, ``keys``), distributed jobs (``job``), lineage, notebooks, the code version of a loop body
(``fingerprint``), and resuming a killed run (``resume``).

Imports nothing: ``import flor`` stays light, and each module is loaded where it is used.
"""
