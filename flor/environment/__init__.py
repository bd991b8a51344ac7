"""What a run sees of its machine and project besides its code: ``FLOR_*`` settings (``settings``), the
project's ``.flor`` paths (``paths``), git (``vcs``), whether a process is gone (``processes``), random state
(``rng``), the numeric environment (``numerics``), and modules already imported (``imported``).

Imports nothing: ``import flor`` stays light, and each module is loaded where it is used.
"""
