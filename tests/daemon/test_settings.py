"""`daemon:` settings: each mistake is a configuration error naming the key; schedules become triggers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.app.daemon.jobs import Backoff, JobSpec
from syncd.config import JobSchedule, load_settings
from syncd.errors import ConfigError
from tests.unit.test_config import config


@pytest.mark.parametrize(("daemon", "message"), [
    ({"jobs": {"poll": {"every": "1m", "cron": "* * * * *"}}}, "daemon.jobs.poll: Value error, set exactly one"),
    ({"jobs": {"reconcile": {}}}, "daemon.jobs.reconcile: Value error, set exactly one"),
    ({"jobs": {"reconcile": {"cron": "0 3 * *"}}}, "needs five fields"),
    ({"jobs": {"poll": {"every": "0s"}}}, "every must be at least 1s"),
    ({"sources": {"crm": {"poll": {"every": "1m"}}}}, "daemon.sources names no source: crm"),
    ({"port": 70000}, "daemon.port: Input should be less than or equal to 65535"),
    ({"listen_on": "::1"}, "daemon.listen_on: unknown key"),
])
def test_a_bad_daemon_section_is_refused(tmp_path, daemon, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(config(tmp_path, daemon=daemon))
    assert message in str(caught.value)


def test_scim_and_daemon_need_different_ports(tmp_path):
    scim = {"port": 9464, "tenants": [{"name": "okta", "source": "idp", "token_file": "okta.token"}]}
    sources = [{"name": "idp", "type": "scim", "mode": "push"}]
    with pytest.raises(ConfigError, match="daemon.port and scim.port must differ"):
        load_settings(config(tmp_path, sources=sources, scim=scim))


def test_schedules_become_triggers():
    assert isinstance(JobSpec("poll", "hr", JobSchedule(every=timedelta(seconds=90))).trigger, IntervalTrigger)
    assert isinstance(JobSpec("reconcile", "hr", JobSchedule(cron="0 3 * * 1-5")).trigger, CronTrigger)
    with pytest.raises(ConfigError, match="job reconcile:hr: cron"):
        _ = JobSpec("reconcile", "hr", JobSchedule(cron="0 25 * * *")).trigger


def test_backoff_doubles_up_to_the_maximum(tmp_path):
    backoff = Backoff(load_settings(config(tmp_path, daemon={"backoff": {"initial": "10s", "max": "35s"}}))
                      .daemon.backoff)
    assert [backoff.failed("poll:hr")[1].total_seconds() for _ in range(4)] == [10, 20, 35, 35]
    backoff.succeeded("poll:hr")
    assert backoff.failed("poll:hr") == (1, timedelta(seconds=10))
