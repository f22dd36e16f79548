"""Offline model simulation: deterministic sim snapshots and a fake provider HTTP server.

``pairshift.sim.snapshots`` is the behaviour model; ``pairshift.sim.server`` speaks the Anthropic
and OpenAI wire formats on top of it. See README.md in this folder for what each snapshot does.
"""
