"""flor inside training frameworks that own the loop.

* ``flor.integrations.lightning``: ``FlorLogger`` and ``FlorCallback`` for PyTorch Lightning's
  ``Trainer`` (extra ``flor-hindsight[lightning]``);
* ``flor.integrations.transformers``: ``FlorCallback`` for Hugging Face's ``Trainer`` (extra
  ``flor-hindsight[transformers]``).

Each records a run as a hand-instrumented script would (args, logged values in ``epoch`` and
``step`` context, checkpoints at epoch ends) and lets ``flor replay`` drive the framework's loop:
a memoized epoch skips its training batches and restores the state they left. The framework is
imported by its module only: ``import flor`` imports neither.
"""
