"""Pure reconcile decisions: (spec, observed children) -> what to create or patch, the next status, events.

Nothing here imports kopf or kubernetes, so every decision is unit-tested with plain dicts.
"""
