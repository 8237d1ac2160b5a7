"""Knit's domain: pure data and rules, no I/O.

Layer: domain. Modules here import pydantic, jinja2 and the standard library only, never an
adapter (NATS, Docker, SQL, HTTP):

- ``knit.domain.specs``: the API's input models (Deployment, Network, RegistryCredentials),
  the status enums, and the validation helpers that turn problems into ``{"field", "message"}``.
- ``knit.domain.resources``, ``knit.domain.health_checks``, ``knit.domain.update_policy``: the
  parts of a deployment spec with rules of their own (limits, health check, rollout policy);
  ``knit.domain.spec_rules``: what all the input models share.
- ``knit.domain.templates``: Jinja2 configuration templates (spec 5.3): syntax check, render.
- ``knit.domain.placement``: the scheduler, ``place(view, request) -> Plan``.
"""
