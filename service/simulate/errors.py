"""The simulator's errors, under the service's exception root."""

from __future__ import annotations

from service.errors import ServiceError


class SimulationError(ServiceError):
    """The simulator could not run: a bad scenario, no pool for a product, a broken loop."""


class ScenarioError(SimulationError):
    """A scenario file that cannot be read or does not validate; ``field`` names the culprit
    (``segments.0.weight``), so the command line can print one actionable line."""
