"""JavaScript semantics that promptfoo's assertions inherit from Node, for pairshift's scorers.

promptfoo runs its checks in JavaScript, so a verdict can hinge on how JavaScript does a small thing:
``new RegExp(p).test(s)`` (:mod:`.regex`), ``String(1e-7)``, ``JSON.parse``, ``trim`` and
``isDeepStrictEqual`` (:mod:`.values`), and ajv's JSON Schema validation with ajv-formats
(:mod:`.json_schema`). Each module reproduces one of them, so that an imported suite gives the verdicts
it gave in promptfoo. Nothing here imports the rest of pairshift.
"""
