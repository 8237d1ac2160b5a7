"""The web dashboard: server-rendered pages of the cluster, live-updated over SSE, and the
forms that change it (submit, scale, delete a deployment; drain a node) and its log panel.

Layer: dashboard. Imports quart, jinja2 (through quart's templates), anyio, pyyaml,
``knit.api``, ``knit.domain`` and ``knit.errors``; never actors or the store.
``create_app`` registers :func:`create_dashboard`'s Blueprint next to the REST API; see
docs/dashboard.md.
"""

from knit.dashboard.views import Dashboard, create_dashboard

__all__ = ["Dashboard", "create_dashboard"]
