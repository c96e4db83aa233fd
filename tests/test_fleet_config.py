"""[store], [fleet] and [queue] in the configuration file, and what check-config says of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stationd.config import ConfigError, check_config, load_config
from stationd.fleet.checks import fleet_problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stationd.toml"
    path.write_text('[organization]\nname = "X"\n' + text)
    path.chmod(0o600)
    return path


def test_the_fleet_sections_are_read_with_their_defaults(tmp_path: Path) -> None:
    secret = tmp_path / "fleet.secret"
    secret.write_text("0123456789abcdef0123\n")
    secret.chmod(0o600)
    config = load_config(
        write(
            tmp_path,
            '[store]\nurl = "postgresql://station@127.0.0.1/fleet"\nlease = 30\n'
            '[fleet]\nname = "district-3"\nsecret_file = "fleet.secret"\ninterfaces = ["192.168.1.20"]\n'
            '[queue]\nunknown = "hold"\n',
        )
    )
    assert config.store.shared and config.store.lease == 30 and config.store.journal == tmp_path / "journal.db"
    assert config.fleet is not None and config.fleet.secret_file == secret and config.fleet.advertise
    assert config.queue.unknown == "hold"
    assert fleet_problems(config) == []
    assert load_config(write(tmp_path, "")).fleet is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[store]\nurl = "mysql://x/y"\n', "store.url: must be a PostgreSQL URL starting with postgresql://"),
        ("[store]\nlease = 0.1\n", "store.lease: must be a number of seconds from 1 to 3600"),
        ('[fleet]\nname = "a/b"\n', "fleet.name: must be a name of letters"),
        ('[queue]\nunknown = "ask"\n', 'queue.unknown: must be one of "provision", "hold"'),
        ('[fleet]\ninterfaces = ["eth0"]\n', 'fleet.interfaces[0]: "eth0" is not an IPv4 address'),
    ],
)
def test_mistakes_are_named_with_their_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, text))
    assert expected in str(refused.value) and "line 4" in str(refused.value)


def test_check_config_guards_the_secrets_and_the_network(tmp_path: Path) -> None:
    loose = tmp_path / "fleet.secret"
    loose.write_text("0123456789abcdef0123\n")
    loose.chmod(0o644)
    config = load_config(
        write(
            tmp_path,
            '[store]\nurl = "postgresql://station:pw@db.school.example/fleet"\n'
            '[fleet]\nsecret_file = "fleet.secret"\nblueprint = "school"\n',
        )
    )
    problems = check_config(config)
    assert any(p.startswith("warning: store.url holds a password") for p in problems)
    assert any("db.school.example is not encrypted" in p and "sslmode=verify-full" in p for p in problems)
    assert any("can be read by other users" in p and "chmod 600" in p for p in problems)
    assert all("pw@" not in p for p in problems)
    short = load_config(write(tmp_path, '[fleet]\nblueprint = "school"\n'))
    assert "error: fleet.blueprint: blueprints live in the fleet's database; set store.url as well" in check_config(
        short
    )
