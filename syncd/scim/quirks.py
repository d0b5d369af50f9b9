"""What real identity providers send that RFC 7644 does not quite say, rewritten into plain SCIM before the
protocol core reads it. Anything this does not recognise passes through untouched, for the core to judge.

- Entra ID: capitalised ops (`Replace`); a member removal as `path: members` with the members in `value`;
  the enterprise `manager` as a bare id; schema URNs of extensions nobody declared (accepted, then dropped,
  so they are never echoed back); an `add` to a filtered path that matches nothing
  (`phoneNumbers[type eq "mobile"].value` on a user without one), which must create the entry the filter
  describes (`POLICY`, the provider's policy).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from scim2_models import InvalidSyntaxException, ScimPolicy

from syncd.adapters.scim_pull import ENTERPRISE

MANAGER = f"{ENTERPRISE}:manager"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
POLICY = ScimPolicy(unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create)

# How deep arrays and objects may nest in a body (a PATCH of an extension's complex attribute nests 5 deep).
# JSON parsers and the code that walks what they return recurse: a deeper body is refused before any of them runs.
MAX_DEPTH = 64
# A JSON string, closed or not; possessive, so that it runs in linear time whatever the body.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH (brackets inside strings do not count). One pass,
    no recursion, whatever the body: even 100,000 `[` are answered at once."""
    depth = 0
    for bracket in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def normalise(body: bytes, method: str, known_schemas: Collection[str]) -> bytes:
    """The body with IdP quirks rewritten; unchanged when it is no JSON object or needs nothing. A body nested
    deeper than MAX_DEPTH raises InvalidSyntaxException (400)."""
    if too_deep(body):
        raise InvalidSyntaxException(detail=f"arrays and objects nest deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    schemas = data.get("schemas")
    if method == "PATCH" and isinstance(schemas, list) and PATCH_OP in schemas:
        fixed = _patch(data, known_schemas)
    elif method in ("POST", "PUT"):
        fixed = _resource(data, known_schemas)
    else:
        return body
    return json.dumps(fixed).encode()


def _known(urn: str, known_schemas: Collection[str]) -> bool:
    lowered = urn.lower()
    return any(lowered == k.lower() or lowered.startswith(k.lower() + ":") for k in known_schemas)


def _manager(value: Any) -> Any:
    return {"value": value} if isinstance(value, str) else value


def _resource(data: dict[str, Any], known_schemas: Collection[str]) -> dict[str, Any]:
    schemas = data.get("schemas")
    if isinstance(schemas, list) and any(isinstance(s, str) for s in schemas):
        kept = [s for s in schemas if not isinstance(s, str) or _known(s, known_schemas)]
        data = {**data, "schemas": kept or schemas}
    data = {key: value for key, value in data.items() if not key.startswith("urn:") or _known(key, known_schemas)}
    enterprise = data.get(ENTERPRISE)
    if isinstance(enterprise, dict) and "manager" in enterprise:
        data[ENTERPRISE] = {**enterprise, "manager": _manager(enterprise["manager"])}
    return data


def _patch(data: dict[str, Any], known_schemas: Collection[str]) -> dict[str, Any]:
    operations = data.get("Operations")
    if not isinstance(operations, list):
        return data
    fixed: list[Any] = []
    for operation in operations:
        if not isinstance(operation, dict):
            fixed.append(operation)
            continue
        op, path, value = operation.get("op"), operation.get("path"), operation.get("value")
        if isinstance(op, str):
            operation = {**operation, "op": op.lower()}
        if (isinstance(op, str) and op.lower() == "remove" and isinstance(path, str) and path.lower() == "members"
                and isinstance(value, list) and value
                and all(isinstance(m, dict) and isinstance(m.get("value"), str) for m in value)):
            # Legacy member removal: remove those members, not all of them.
            fixed.extend({"op": "remove", "path": f'members[value eq {json.dumps(m["value"])}]'} for m in value)
            continue
        if isinstance(path, str) and path.lower() == MANAGER.lower():
            operation = {**operation, "value": _manager(value)}
        elif path is None and isinstance(value, dict):
            operation = {**operation, "value": _patch_value(value, known_schemas)}
        fixed.append(operation)
    return {**data, "Operations": fixed}


def _patch_value(value: dict[str, Any], known_schemas: Collection[str]) -> dict[str, Any]:
    """A path-less value: dotted and URN-prefixed keys stay (the core reads them) unless of an unknown schema."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key.startswith("urn:") and not _known(key, known_schemas):
            continue
        if key.lower() == MANAGER.lower():
            item = _manager(item)
        elif key == ENTERPRISE and isinstance(item, dict) and "manager" in item:
            item = {**item, "manager": _manager(item["manager"])}
        out[key] = item
    return out
