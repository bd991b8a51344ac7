"""Hindsight replay: plan, propagate, execute.

``flor.replay(...)`` is this package called as a function (see :func:`flor.replay.session.replay`).
"""

import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *names, **options):
        """Recover ``names`` for past runs; see :func:`flor.replay.session.replay`.

        >>> flor.replay("weight_norm", workers=2)        # doctest: +SKIP
        """
        from .session import replay

        return replay(*names, **options)


_sys.modules[__name__].__class__ = _CallableModule
