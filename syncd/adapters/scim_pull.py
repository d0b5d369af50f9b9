"""The SCIM pull source: a remote SCIM server's /Users and /Groups, polled with scim2-client; and the mapping of
SCIM JSON (users and groups) into a `Snapshot`, which the push endpoint (`syncd.scim`) shares: a person's groups
are the display names of the groups listing them as a member, plus those the server lists on the user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from syncd.config import ScimSourceSettings, read_secret
from syncd.core.model import Identity, Snapshot
from syncd.errors import SourceUnavailable

log = structlog.get_logger("syncd.sources.scim")

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_PLAIN_ATTRIBUTES = ("externalId", "title", "userType", "locale", "preferredLanguage")
_ENTERPRISE_ATTRIBUTES = ("department", "division", "organization", "costCenter", "employeeNumber")


def _email(user: Mapping[str, Any]) -> str:
    emails = [e for e in user.get("emails") or [] if isinstance(e, Mapping) and e.get("value")]
    chosen = next((e for e in emails if e.get("primary")), None) or next(
        (e for e in emails if e.get("type") == "work"), None) or (emails[0] if emails else {})
    return str(chosen.get("value", ""))


def _display_name(user: Mapping[str, Any]) -> str:
    name = user.get("name") or {}
    given = " ".join(str(part) for part in (name.get("givenName"), name.get("familyName")) if part)
    return str(user.get("displayName") or name.get("formatted") or given)


def _attributes(user: Mapping[str, Any]) -> dict[str, str]:
    attributes = {key: str(user[key]) for key in _PLAIN_ATTRIBUTES if user.get(key) not in (None, "")}
    enterprise = user.get(ENTERPRISE) or {}
    attributes |= {key: str(enterprise[key]) for key in _ENTERPRISE_ATTRIBUTES if enterprise.get(key) not in (None, "")}
    return attributes


def snapshot_of(source: str, users: Iterable[Mapping[str, Any]], groups: Iterable[Mapping[str, Any]]) -> Snapshot:
    """People from SCIM User and Group JSON. A user without id or userName is a problem: the snapshot is partial."""
    member_of: dict[str, set[str]] = {}
    for group in groups:
        name = str(group.get("displayName") or "").strip()
        for member in group.get("members") or []:
            if name and isinstance(member, Mapping) and member.get("value"):
                member_of.setdefault(str(member["value"]), set()).add(name)
    identities: list[Identity] = []
    problems: list[str] = []
    for user in users:
        person_id, username = str(user.get("id") or ""), str(user.get("userName") or "").strip()
        if not person_id or not username:
            problems.append(f"user {person_id or '(no id)'}: no {'id' if not person_id else 'userName'}")
            continue
        listed = {str(g["display"]) for g in user.get("groups") or [] if isinstance(g, Mapping) and g.get("display")}
        identities.append(Identity(
            id=person_id,
            username=username,
            email=_email(user),
            display_name=_display_name(user),
            groups=frozenset(member_of.get(person_id, set()) | listed),
            active=user.get("active") is not False,
            attributes=_attributes(user),
            origin=f"SCIM User {person_id} (source {source})",
        ))
    return Snapshot(source, tuple(identities), complete=not problems, problems=tuple(problems))


class ScimPullSource:
    """A remote SCIM server, read in full (every page of /Users and /Groups) on every run."""

    def __init__(self, settings: ScimSourceSettings) -> None:
        self.settings = settings
        self.name = settings.name

    def read(self) -> Snapshot:
        import httpx2
        from scim2_client import SCIMClientException
        from scim2_client.engines.httpx2 import SyncSCIMClient
        from scim2_models import SCIMException

        token_file = self.settings.token_file
        token = read_secret(token_file, f"source {self.name}: token_file").strip() if token_file else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = httpx2.Client(base_url=str(self.settings.url).rstrip("/"), headers=headers,
                             timeout=self.settings.timeout.total_seconds())
        try:
            client = SyncSCIMClient(http)
            client.discover()
            users, groups = self._all(client, "User"), self._all(client, "Group")
        except (SCIMClientException, SCIMException, httpx2.HTTPError, ValueError) as error:
            # The message names the server's answer, never the token.
            raise SourceUnavailable(f"source {self.name}: cannot read {self.settings.url}: "
                                    f"{error.__class__.__name__}: {str(error)[:200]}") from None
        finally:
            http.close()
        log.info("read a SCIM server", source=self.name, users=len(users), groups=len(groups))
        return snapshot_of(self.name, users, groups)

    def close(self) -> None:
        pass

    def _all(self, client: Any, resource_type: str) -> list[dict[str, Any]]:
        """Every page, by startIndex, until totalResults are in hand. A short or failed page raises."""
        from scim2_models import SearchRequest

        found: list[dict[str, Any]] = []
        while True:
            page = client.query(resource_type, query_parameters=SearchRequest(
                start_index=len(found) + 1, count=self.settings.page_size))
            resources = page.resources or []
            found.extend(r.model_dump() for r in resources)
            total = page.total_results or 0
            if len(found) >= total:
                return found
            if not resources:
                raise ValueError(f"the server announced {total} {resource_type}s and stopped after {len(found)}")
