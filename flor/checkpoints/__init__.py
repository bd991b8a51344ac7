"""Checkpoints of the objects that ``flor.checkpointing`` registers.

hooks (what the loops report), policy (when), snapshot (copy state into host memory), variables
(plain variables a skipped loop assigns), writer (persist in the background), objects (how an
array is stored: compressed, deltas), diskbudget (FLOR_CKPT_DISK), gc (thinning), handoff (the last
big checkpoint, from a forked process), manager (a recording run's checkpoints), restore (read
back, without pickle for tensors).
"""
