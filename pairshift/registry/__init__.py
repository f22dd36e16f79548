"""The registry: models, prompts, datasets, deployments, policies, the pair ledger, evals, migrations,
observations."""

from pairshift.registry.store import Registry, open_registry

__all__ = ["Registry", "open_registry"]
