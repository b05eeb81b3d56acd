"""The copy side: prompts, the language model, sampling, trait detection and guardrails.

Public entry points (import them from their modules; this package import stays light, since the
simulator and the service import ``generator.traits`` without wanting torch):

* ``generator.sampling.generate(model, product, channel, n, *, seed, ...) -> Report``: the one
  way to write a pool (``.pool``), with what was sampled and rejected; ``model`` is any
  ``generator.interface.CopyModel``
* ``generator.model.CopyGenerator.from_path(path=None, device=None)``: a Hugging Face causal LM
  as a ``CopyModel``
* ``generator.traits.detect_traits(text, *, language, channel, brand=None) -> list[str]``
* ``generator.guardrails.check(text, product, channel, *, shopper=None, others=()) ->
  CheckResult`` and ``Checker`` (the same, bound to one product), ``check_pool``
* ``generator.prompts`` (the prompt formats, ``training_text`` for training the same model),
  ``generator.slots`` (``fill``/``unfill``), ``generator.bootstrap.train`` (the bootstrap model).

Nothing here imports ``bandit`` or ``vowpalwabbit``.
"""
