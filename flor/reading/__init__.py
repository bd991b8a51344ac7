"""Reading runs back: the dataframe and read-only SQL (``query``), ``flor runs`` and ``flor show``
(``runlist``, ``runinfo``), captured output (``console``), values extracted from it (``extraction``), which
runs a command works on (``selection``, ``filters``), the model registry (``registry``), and exact
``--json``/``--csv`` output (``output``).

Imports nothing: ``import flor`` stays light, and each module is loaded where it is used.
"""
