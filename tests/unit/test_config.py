"""Config and policy validation: every error names the file, the key path and what to do."""

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from syncd.config import LdapSourceSettings, UsageSettings, load_policy, load_settings, read_secret
from syncd.core.settings import parse_duration
from syncd.errors import ConfigError
from tests.conftest import ROOT, write_yaml


def config(tmp_path: Path, policy: dict | None = None, **overrides) -> Path:
    write_yaml(tmp_path / "policy.yaml", policy if policy is not None else {
        "rules": [{"name": "dev", "match": {"groups": ["developers"]},
                   "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "edit"}]}]})
    data = {"policy": "policy.yaml", "sources": [{"name": "hr", "type": "file", "path": "people.csv"}],
            "clusters": [{"name": "dev", "kubeconfig": "admin.kubeconfig"}]} | overrides
    return write_yaml(tmp_path / "syncd.yaml", data)


def test_example_configs_are_valid():
    settings = load_settings(ROOT / "configs" / "syncd.example.yaml")
    policy = load_policy(settings)
    assert settings.sources[0].path == ROOT / "configs" / "people.example.csv"
    assert policy.rules


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    settings = load_settings(config(tmp_path))
    assert settings.policy == tmp_path / "policy.yaml"
    assert settings.clusters[0].kubeconfig == tmp_path / "admin.kubeconfig"
    assert settings.ledger.url == f"sqlite:///{tmp_path}/syncd-ledger.db"


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = config(tmp_path, clusters=[{"name": "dev", "kubeconfig": "k", "namespcae": "x"}])
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"{path}: clusters.0.namespcae: unknown key" in str(caught.value)


def test_missing_key_is_reported(tmp_path):
    path = write_yaml(tmp_path / "syncd.yaml", {"policy": "p.yaml", "clusters": []})
    message = str(pytest.raises(ConfigError, load_settings, path).value)
    assert "sources: required key is missing" in message
    assert "clusters: List should have at least 1 item" in message


def test_invalid_yaml_points_at_the_line(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text("policy: p.yaml\nsources: [\n")
    assert f"{path}:3:" in str(pytest.raises(ConfigError, load_settings, path).value)


def test_duplicate_cluster_names_are_refused(tmp_path):
    path = config(tmp_path, clusters=[{"name": "dev", "kubeconfig": "a"}, {"name": "dev", "kubeconfig": "b"}])
    assert "repeated: dev" in str(pytest.raises(ConfigError, load_settings, path).value)


@pytest.mark.parametrize("name", ["../prod", "a/b", ".hidden", "prod*", "", "x" * 64])
def test_cluster_names_must_be_safe_file_names(tmp_path, name):
    """A cluster name names the delivered files (CLUSTER.kubeconfig)."""
    path = config(tmp_path, clusters=[{"name": name, "kubeconfig": "a"}])
    assert "clusters.0.name" in str(pytest.raises(ConfigError, load_settings, path).value)


def test_policy_naming_an_unknown_cluster_says_where(tmp_path):
    settings = load_settings(config(tmp_path, policy={"rules": [
        {"name": "x", "match": {"groups": ["g"]}, "grant": [{"cluster": "prod", "namespaces": ["a"], "role": "v"}]}]}))
    message = str(pytest.raises(ConfigError, load_policy, settings).value)
    assert "rules.0.grant.0.cluster: unknown cluster 'prod'" in message


def test_cluster_wide_grant_needs_the_cluster_to_allow_it(tmp_path):
    policy = {"rules": [{"name": "admins", "match": {"groups": ["g"]},
                         "grant": [{"cluster": "dev", "cluster_wide": True, "role": "cluster-admin"}]}]}
    settings = load_settings(config(tmp_path, policy=policy))
    assert "allow_cluster_wide: true" in str(pytest.raises(ConfigError, load_policy, settings).value)
    allowed = load_settings(config(tmp_path, policy=policy,
                                   clusters=[{"name": "dev", "kubeconfig": "k", "allow_cluster_wide": True}]))
    assert load_policy(allowed).rules[0].grant[0].cluster_wide


def test_token_shorter_than_kubernetes_allows_is_refused(tmp_path):
    policy = {"rules": [{"name": "x", "match": {"groups": ["g"]},
                         "grant": [{"cluster": "dev", "namespaces": ["a"], "role": "v", "token_ttl": "5m"}]}]}
    settings = load_settings(config(tmp_path, policy=policy))
    assert "shorter than 10m" in str(pytest.raises(ConfigError, load_policy, settings).value)


def test_grant_needs_exactly_one_of_namespaces_or_cluster_wide(tmp_path):
    policy = {"rules": [{"name": "x", "match": {"groups": ["g"]},
                         "grant": [{"cluster": "dev", "role": "v"}]}]}
    settings = load_settings(config(tmp_path, policy=policy))
    message = str(pytest.raises(ConfigError, load_policy, settings).value)
    assert "invalid policy" in message and "rules.0.grant.0" in message


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("30m", 1800), ("8h", 28800), ("90d", 7776000), (600, 600),
                                               ("300ms", 0.3), ("0s", 0)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_bad_duration_says_how_to_write_one():
    with pytest.raises(ValueError, match="write e.g. 300ms, 45s"):
        parse_duration("soon")


def test_the_commented_ldap_source_in_the_example_is_valid(tmp_path):
    lines = (ROOT / "configs" / "syncd.example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - name: corp")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append("  " + line[4:] if line.startswith("  # ") else line)
    source = yaml.safe_load("\n".join(block))[0]
    settings = LdapSourceSettings.model_validate(source)
    assert settings.tls == "ldaps" and settings.verify_hostname and settings.membership.nested == "client"


LDAP = {"type": "ldap", "name": "corp", "servers": ["ldaps://ldap.example.org"], "bind_dn": "cn=syncd",
        "password_env": "SYNCD_LDAP_PASSWORD", "people_base": "ou=people", "group_base": "ou=groups"}


def test_an_inline_ldap_password_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_settings(config(tmp_path, sources=[LDAP | {"password": "hunter2"}]))
    assert "sources.0.ldap.password: unknown key" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_ldap_paths_are_relative_to_the_config_file(tmp_path):
    settings = load_settings(config(tmp_path, sources=[LDAP | {"password_env": None, "password_file": "pw",
                                                               "ca_file": "ca.pem"}]))
    assert settings.sources[0].password_file == tmp_path / "pw" and settings.sources[0].ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(("change", "message"), [
    ({"password_env": "X", "password_file": "/x"}, "exactly one of password_file or password_env"),
    ({"servers": ["ldap://plain.example.org"]}, "tls is ldaps"),
    ({"servers": ["http://x"]}, "must start with ldap"),
])
def test_ldap_source_settings_refuse_inline_passwords_and_plain_urls(change, message):
    with pytest.raises(ValidationError, match=message):
        LdapSourceSettings.model_validate(LDAP | change)


def test_secret_files_lose_only_their_line_break_and_errors_name_the_file(tmp_path):
    secret = tmp_path / "bind.password"
    secret.write_text(" pass word \r\n")
    assert read_secret(secret, "source dir: password_file") == " pass word "
    secret.write_text("\n")
    with pytest.raises(ConfigError, match=r"source dir: password_file: .*bind.password is empty"):
        read_secret(secret, "source dir: password_file")
    with pytest.raises(ConfigError, match="scim tenant okta: token_file: cannot read .*missing: No such file"):
        read_secret(tmp_path / "missing", "scim tenant okta: token_file")


def test_the_leader_lease_defaults_to_the_ledger_for_15s_and_a_kubernetes_lease_names_a_known_cluster(tmp_path):
    leader = load_settings(config(tmp_path)).daemon.leader
    assert (leader.backend, leader.lease.total_seconds(), leader.kubernetes) == ("ledger", 15, None)
    lease = {"backend": "kubernetes", "kubernetes": {"cluster": "dev", "namespace": "syncd"}}
    chosen = load_settings(config(tmp_path, daemon={"leader": lease})).daemon.leader
    assert chosen.kubernetes is not None and chosen.kubernetes.name == "syncd-leader"
    with pytest.raises(ConfigError, match="names no cluster"):
        load_settings(config(tmp_path, daemon={"leader": lease | {"kubernetes": {"cluster": "prod",
                                                                                  "namespace": "syncd"}}}))
    with pytest.raises(ConfigError, match="exactly when backend is kubernetes"):
        load_settings(config(tmp_path, daemon={"leader": {"backend": "kubernetes"}}))


def test_usage_retention_keeps_at_least_the_idle_window():
    """A last use deleted by retention would make an access look idle since its grant."""
    assert UsageSettings(idle_after="30d", retention="30d").retention.days == 30
    with pytest.raises(ValueError, match="retention must be at least idle_after"):
        UsageSettings(idle_after="90d", retention="30d")


def test_audit_files_and_client_cas_are_relative_to_the_config_file(tmp_path):
    settings = load_settings(config(tmp_path, audit={
        "tls_cert": "tls.crt", "tls_key": "tls.key", "files": [{"cluster": "dev", "path": "log/audit.log"}],
        "senders": [{"cluster": "dev", "client_ca": "dev-ca.crt", "client_cn": "kube-apiserver"}]}))
    assert settings.audit.files[0].path == tmp_path / "log" / "audit.log"
    [sender] = settings.audit.senders
    assert sender.client_ca == tmp_path / "dev-ca.crt" and sender.token_file is None


@pytest.mark.parametrize(("audit", "message"), [
    ({}, "set senders (the webhook), files (audit log files) or both"),
    ({"senders": [{"cluster": "dev"}]}, "set token_file, client_ca or both"),
    ({"senders": [{"cluster": "dev", "token_file": "t", "client_cn": "x"}]}, "client_cn needs client_ca"),
    ({"senders": [{"cluster": "dev", "client_ca": "ca.crt"}]}, "client certificates (senders[].client_ca) need TLS"),
    ({"files": [{"cluster": "prod", "path": "a.log"}]}, "audit.files name no cluster: prod"),
    ({"files": [{"cluster": "dev", "path": "a.log"}, {"cluster": "dev", "path": "a.log"}]}, "repeated: a.log"),
])
def test_audit_settings_that_cannot_work_are_refused(tmp_path, audit, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config(tmp_path, audit=audit))
