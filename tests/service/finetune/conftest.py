"""The generator tests' models (the shipped bootstrap checkpoint, a tiny random one) for the
gate's, the refresh's and the round's tests."""

from tests.generator.conftest import bootstrap, tiny_slots_model

__all__ = ["bootstrap", "tiny_slots_model"]
