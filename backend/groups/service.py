"""What the groups API does: validate every run of a group, then create each through the runs service.

The whole group is validated before any run is stored, and the runs are stored in the request's one unit of
work, so a group is created whole or not at all (a refusal of the third run rolls back the first two).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from anode_lab.specs.common import GradientSpec
from anode_lab.specs.compare import method_label
from backend.errors import InvalidSpec, NotFound, describe_errors
from backend.groups import repository as groups
from backend.groups.schemas import GroupCreate, GroupPublic
from backend.queue import RunQueues
from backend.runs import service as runs_service
from backend.runs.schemas import RunCreate
from backend.settings import Settings


def run_bodies(settings: Settings, body: GroupCreate) -> list[RunCreate]:
    """One run per method, validated and admitted (the operator's cost limits); a 422 naming ``methods.<i>`` (or
    ``spec.<field>``) before anything is made."""
    errors: list[dict[str, Any]] = []
    bodies: list[RunCreate] = []
    labels: dict[str, int] = {}
    for index, method in enumerate(body.methods):
        spec = {**body.spec, "ode": {**_mapping(body.spec.get("ode")), "gradient": method}}
        try:
            admitted = runs_service.admit_spec(settings, body.kind, runs_service.validate_spec(body.kind, spec))
        except InvalidSpec as exc:
            for e in exc.errors or []:
                loc = list(e["loc"])
                if loc[:3] == ["spec", "ode", "gradient"]:  # the method's own fault: name its entry
                    loc = ["methods", str(index), *loc[3:]]
                if {**e, "loc": loc} not in errors:  # a fault of the shared spec is said once
                    errors.append({**e, "loc": loc})
            continue
        valid = admitted.model_dump(mode="json")
        label = method_label(GradientSpec.model_validate(valid["ode"]["gradient"]))
        if label in labels:
            errors.append({"loc": ["methods", str(index)], "type": "duplicate",
                           "msg": f"method {label!r} is listed twice (entries {labels[label]} and {index}); "
                                  "list each once"})
            continue
        labels[label] = index
        name = f"{body.name} · {label}" if body.name else label
        bodies.append(RunCreate(kind=body.kind, spec=valid, name=name, tags=body.tags))
    if errors:
        detail, clean = describe_errors(errors)
        raise InvalidSpec(detail, errors=clean)
    return bodies


def create_group(session: Session, settings: Settings, queues: RunQueues, body: GroupCreate) -> GroupPublic:
    bodies = run_bodies(settings, body)
    group = groups.add(session, kind=body.kind, name=body.name)
    created = [runs_service.create_run(session, settings, queues, run, group_id=group.id) for run in bodies]
    return GroupPublic(id=group.id, kind=group.kind, name=group.name, created_at=group.created_at, runs=created)


def get_group(session: Session, settings: Settings, group_id: int) -> GroupPublic:
    group = groups.get(session, group_id)
    if group is None:
        raise NotFound(f"group {group_id} does not exist")
    live = runs_service.liveness(session, settings)
    runs = [runs_service.public(run, live) for run in groups.runs_of(session, group_id)]
    return GroupPublic(id=group.id, kind=group.kind, name=group.name, created_at=group.created_at, runs=runs)


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
