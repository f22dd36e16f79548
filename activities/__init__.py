"""Every side effect of the workflows: registry reads and writes, provider calls, notices."""

from activities.health import registry_health

ALL_ACTIVITIES: list = [registry_health]
