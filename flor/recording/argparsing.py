"""The script's own argparse options, recorded as args without a rewrite.

Most training scripts read their hyper-parameters with ``argparse``. When flor is imported by a
script, ``ArgumentParser.parse_known_args`` (which ``parse_args`` calls) is wrapped: after the
script's parser has parsed its command line, the resulting namespace goes through
:func:`flor.args`, so every option is recorded as a typed arg (``flor runs``, ``flor dataframe``,
the UI), ``--kwargs name=value`` overrides it like any ``flor.arg`` (after the script's own
parsing: ``--lr 0.1 --kwargs lr=0.2`` gives 0.2), and a replay gives the script the values the run
recorded. Only the outermost parse is recorded (sub-parsers parse inside it), and not flor's own
command line. ``FLOR_ARGPARSE=0`` turns it off.

>>> import argparse, flor                                       # doctest: +SKIP
>>> args = argparse.ArgumentParser().parse_args()  # recorded
"""

from __future__ import annotations

import threading

_depth = threading.local()


def install(record) -> None:
    """Wrap ``argparse.ArgumentParser.parse_known_args`` (once) so that the outermost parse's
    namespace goes through ``record`` (:func:`flor.args`)."""
    import argparse

    original = argparse.ArgumentParser.parse_known_args
    if getattr(original, "__flor_wrapped__", False):
        return

    def parse_known_args(self, args=None, namespace=None):
        level = getattr(_depth, "level", 0)
        _depth.level = level + 1
        try:
            result = original(self, args, namespace)
        finally:
            _depth.level = level
        if level == 0:
            from ..checkpoints import iterators

            iterators.install()  # the script's loaders are usually made after its options are read
            record(result[0])
        return result

    parse_known_args.__flor_wrapped__ = True
    parse_known_args.__wrapped__ = original
    parse_known_args.__doc__ = original.__doc__
    argparse.ArgumentParser.parse_known_args = parse_known_args
