"""The dashboard's actions: plain HTML forms that change the cluster through the port.

Layer: dashboard. Imports quart, pyyaml, ``knit.api.ports``, ``knit.domain`` and
``knit.errors``; never actors or the store.

Each action is the dashboard's twin of one REST route, calls the same ``ControlPlane``
method, validates with the same pydantic models (so a form shows the API's own field errors)
and needs the same role (``knit.domain.auth``, enforced by the gate before any route here
runs, as are the session, the ``Origin`` and the form body). Forms work without JavaScript:
a POST answers 303 to the page that shows the result (Post/Redirect/Get), with ``?done=``
naming what happened; a refused action shows its page again with the errors and a 4xx
status, and changes nothing.

- ``GET|POST /ui/deployments/new``: a deployment from YAML or JSON (``POST /deployments``);
  when its name is taken, the form offers to update that deployment instead (``update``:
  its id; ``PUT /deployments/{id}``);
- ``POST /ui/deployments/<id>/scale`` (``POST /deployments/{id}/scale``);
- ``GET|POST /ui/deployments/<id>/delete``: a confirmation, then ``DELETE /deployments/{id}``;
- ``POST /ui/nodes/<id>/drain`` and ``/eligible`` (``POST /nodes/{id}/drain``, ``/eligible``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from quart import Blueprint, Response, redirect, request, url_for
from quart.typing import ResponseReturnValue

from knit.api.ports import ControlPlane, JSONDict
from knit.dashboard.signin import safe_next
from knit.domain.lifecycle import ScaleSpec
from knit.domain.specs import DeploymentSpec
from knit.domain.validation import validate_model
from knit.errors import Conflict, Invalid, ValidationError

log = logging.getLogger(__name__)

FieldErrors = list[dict[str, str]]
DONE = frozenset({"created", "updated", "scaled", "deleting", "drained", "eligible"})
"""What ``?done=`` may say (a page shows its own sentence for each, never the argument)."""
_WHOLE_NUMBER = re.compile(r"-?\d{1,12}")


class _NoAliases(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases: a 1 MiB spec made of aliases of
    aliases would expand into billions of values for the validation to walk."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not accepted", None
            )
        return super().compose_node(parent, index)


def parse_deployment(text: str) -> DeploymentSpec:
    """A deployment spec from the YAML or JSON ``text`` (JSON is YAML too), validated as
    ``POST /deployments`` validates its body.

    Raises:
        Invalid: the text is not YAML, not one mapping, or breaks the spec's rules (the
            API's ``[{"field", "message"}]``; ``body`` for the text as a whole).
    """
    try:
        data = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as exc:
        message = f"is neither valid YAML nor JSON: {exc}"
        raise Invalid([{"field": "body", "message": message}]) from None
    except RecursionError:
        raise Invalid([{"field": "body", "message": "is nested too deeply"}]) from None
    if not isinstance(data, dict):
        raise Invalid([{"field": "body", "message": "must be one deployment (a mapping)"}])
    try:
        return validate_model(DeploymentSpec, data)
    except RecursionError:
        raise Invalid([{"field": "body", "message": "is nested too deeply"}]) from None


def field_errors(exc: Invalid | ValidationError) -> FieldErrors:
    """The ``[{"field", "message"}]`` of a validation error, as the API answers them."""
    if isinstance(exc, Invalid):
        return list(exc.errors)
    return [{"field": exc.field, "message": exc.message}]


def with_done(target: str, done: str) -> str:
    """``target`` with ``done=`` set (replacing any earlier one; a ``#fragment`` dropped)."""
    path, _, query = target.partition("#")[0].partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith(("done=", "fragment="))]
    return f"{path}?{'&'.join([*kept, f'done={done}'])}"


Render = Callable[..., Awaitable[Response]]


def add_actions(
    bp: Blueprint, control: ControlPlane, *, render: Render, deployment_page: Render
) -> None:
    """Register the action routes on the dashboard's Blueprint.

    Args:
        bp: the dashboard's Blueprint.
        control: the control plane the actions change.
        render: ``render_page(template, status, **context)``.
        deployment_page: ``Dashboard.deployment(id, status, **context)``, to show a
            deployment again with an action's errors.
    """

    @bp.route("/ui/deployments/new", methods=["GET"])
    async def new_deployment_form() -> Response:
        return await render("new_deployment.html", 200, section="deployments", text="")

    async def named(name: str) -> JSONDict | None:
        found = [d for d in await control.list_deployments() if d.get("name") == name]
        return {"id": found[0].get("id"), "name": name} if found else None

    @bp.route("/ui/deployments/new", methods=["POST"])
    async def new_deployment() -> ResponseReturnValue:
        form = await request.form
        text = form.get("spec") or ""
        update = (form.get("update") or "").strip()
        errors: FieldErrors
        existing: JSONDict | None = None
        status = 422
        try:
            spec = parse_deployment(text)
            if update:
                done = await control.update_deployment(update, spec)
            else:
                done = await control.create_deployment(spec)
        except (Invalid, ValidationError) as exc:
            errors = field_errors(exc)
        except Conflict as exc:
            status, errors = 409, [{"field": "name", "message": str(exc)}]
            existing = None if update else await named(spec.name)
        else:
            verb = "updated" if update else "created"
            log.info("dashboard: %s deployment %s", verb, done.get("id"))
            target = url_for("dashboard.deployment", deployment_id=str(done["id"]))
            return redirect(with_done(target, verb), 303)
        return await render(
            "new_deployment.html",
            status,
            section="deployments",
            text=text,
            errors=errors,
            existing=existing,
        )

    @bp.route("/ui/deployments/<deployment_id>/scale", methods=["POST"])
    async def scale(deployment_id: str) -> ResponseReturnValue:
        raw = ((await request.form).get("replicas") or "").strip()
        value: object = int(raw) if _WHOLE_NUMBER.fullmatch(raw) else raw
        try:
            spec = validate_model(ScaleSpec, {"replicas": value})
            await control.scale_deployment(deployment_id, spec.replicas)
        except (Invalid, ValidationError) as exc:
            return await deployment_page(
                deployment_id, 422, scale_errors=field_errors(exc), replicas_text=raw
            )
        except Conflict as exc:
            return await deployment_page(deployment_id, 409, action_error=str(exc))
        target = url_for("dashboard.deployment", deployment_id=deployment_id)
        return redirect(with_done(target, "scaled"), 303)

    @bp.route("/ui/deployments/<deployment_id>/delete", methods=["GET"])
    async def confirm_delete(deployment_id: str) -> Response:
        deployment = await control.get_deployment(deployment_id)
        return await render(
            "confirm_delete.html",
            200,
            section="deployments",
            deployment={k: deployment.get(k) for k in ("id", "name", "image", "replicas")},
        )

    @bp.route("/ui/deployments/<deployment_id>/delete", methods=["POST"])
    async def delete(deployment_id: str) -> ResponseReturnValue:
        try:
            await control.delete_deployment(deployment_id)
        except Conflict as exc:
            return await deployment_page(deployment_id, 409, action_error=str(exc))
        log.info("dashboard: deleting deployment %s", deployment_id)
        return redirect(with_done(url_for("dashboard.overview"), "deleting"), 303)

    async def set_eligible(node_id: str, eligible: bool) -> ResponseReturnValue:
        wanted = (await request.form).get("next")
        # Back where the form was (a dashboard path), else the node's own page.
        target = safe_next(wanted) if wanted else url_for("dashboard.node", node_id=node_id)
        await control.set_node_eligible(node_id, eligible)
        log.info("dashboard: node %s %s", node_id, "eligible" if eligible else "drained")
        return redirect(with_done(target, "eligible" if eligible else "drained"), 303)

    @bp.route("/ui/nodes/<node_id>/drain", methods=["POST"])
    async def drain_node(node_id: str) -> ResponseReturnValue:
        return await set_eligible(node_id, False)

    @bp.route("/ui/nodes/<node_id>/eligible", methods=["POST"])
    async def eligible_node(node_id: str) -> ResponseReturnValue:
        return await set_eligible(node_id, True)
