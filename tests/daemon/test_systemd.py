"""systemd/syncd.service is a valid unit, and hardened to an exposure of 2.0 or less."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "systemd" / "syncd.service"
INSTALLED_SYNCD = "/opt/syncd/bin/syncd"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's syncd, since verify checks the command exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed; run scripts/setup (it installs the systemd package)")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_SYNCD} run --config /etc/syncd/syncd.yaml" in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_SYNCD, str(Path(sys.executable).parent / "syncd")))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def test_the_unit_verifies(unit: Path):
    done = analyze("verify", "--man=no", str(unit))
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_unit_is_hardened(unit: Path):
    done = analyze("security", "--offline=yes", "--threshold=20", "--no-pager", str(unit))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    (figure,) = re.findall(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert float(figure) <= 2.0
    for setting in ("DynamicUser=yes", "StateDirectory=syncd", "ProtectSystem=strict", "NoNewPrivileges=yes",
                    "PrivateTmp=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
                    "LoadCredential=scim-token:", "LoadCredential=ldap-password:", "Type=notify", "WatchdogSec="):
        assert setting in unit.read_text(), setting


def test_the_unit_runs_a_command_syncd_has():
    done = subprocess.run([sys.executable, "-m", "syncd", "run", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--config" in done.stdout
