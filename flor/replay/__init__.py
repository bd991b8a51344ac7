"""Hindsight replay: plan, propagate, execute."""
