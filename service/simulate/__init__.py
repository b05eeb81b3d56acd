"""The offline closed-loop simulator (``copyloop simulate``, CONTRACT.md §6): synthetic shoppers
with known tastes, the real generator, guardrails and bandit, and the policies of §6 compared
on the same shoppers."""
