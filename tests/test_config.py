"""The TOML configuration: loading, error messages, deeper checks, and `stationd init` / `check-config`."""

from __future__ import annotations

import plistlib
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stationd.cli import app
from stationd.config import (
    DEFAULT_SKIP_SETUP,
    Config,
    ConfigError,
    NamingConfig,
    OrganizationConfig,
    check_config,
    default_config_path,
    default_database_path,
    example_config,
    load_config,
)
from stationd.identity import create_identity
from stationd.profiles import validate_profile, wifi_profile

SECRET = "Zq7-very-secret-Wi-Fi"

MINIMAL = """\
[organization]
name = "Example School"
"""


def write(tmp_path: Path, text: str, name: str = "stationd.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(0o600)
    return path


def problems_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def uncomment_wifi(text: str) -> str:
    """The example with its [wifi] block enabled by name (not by profile), as a technician would do."""
    lines = []
    for line in text.splitlines():
        stripped = line.removeprefix("# ")
        if stripped.split(" ")[0] in ("[wifi]", "ssid", "security", "password", "auto_join", "hidden"):
            line = stripped
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_example_config_loads(tmp_path):
    config = load_config(write(tmp_path, example_config()))
    assert config.organization.name == "Example School"
    assert config.organization.identity == tmp_path / "identity.pem"
    assert config.station.concurrency == 8
    assert config.station.log_format == "auto"
    assert config.steps.erase and config.steps.activate
    assert config.steps.skip_setup == DEFAULT_SKIP_SETUP
    assert config.wifi is None
    assert config.enrollment.mode == "none"
    assert config.naming.pattern == "{org}-{serial}"
    assert config.timeouts.erase == 900 and config.timeouts.retries == 3
    assert config.source == tmp_path / "stationd.toml"


def test_example_config_quotes_any_organisation_name(tmp_path):
    name = 'École "Les Tilleuls" \\ Nord'
    assert load_config(write(tmp_path, example_config(name))).organization.name == name


def test_example_wifi_block_loads_once_uncommented(tmp_path):
    config = load_config(write(tmp_path, uncomment_wifi(example_config())))
    assert config.wifi is not None
    assert config.wifi.ssid == "School-WiFi"
    assert config.wifi.security == "WPA2"
    validate_profile(config.wifi.mobileconfig(), "generated")


def test_minimal_config_uses_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.station.database == default_database_path()
    assert config.station.pair_records == default_database_path().parent / "pair_records"
    assert config.activation.url == "https://albert.apple.com/deviceservices"
    assert config.activation.drm_handshake_url == "https://albert.apple.com/deviceservices/drmHandshake"
    assert config.activation.device_activation_url == "https://albert.apple.com/deviceservices/deviceActivation"


def test_config_can_be_built_in_code():
    config = Config(organization=OrganizationConfig(name="Lab"))
    assert config.station.concurrency == 8
    assert config.station.pair_records == config.station.database.parent / "pair_records"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    config = load_config(
        write(
            folder,
            """\
        [station]
        database = "data/stationd.db"
        [organization]
        name = "X"
        identity = "../keys/identity.pem"
        [wifi]
        profile = "wifi.mobileconfig"
        [profiles]
        extra = ["apps.mobileconfig", "/abs/restrictions.mobileconfig"]
    """,
        )
    )
    assert config.station.database == folder / "data" / "stationd.db"
    assert config.station.pair_records == folder / "data" / "pair_records"
    assert config.organization.identity == tmp_path / "keys" / "identity.pem"
    assert config.wifi.profile == folder / "wifi.mobileconfig"
    assert config.profiles.extra == (folder / "apps.mobileconfig", Path("/abs/restrictions.mobileconfig"))


def test_choices_ignore_case(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + '[wifi]\nssid = "N"\nsecurity = "wpa3"\npassword = "12345678"\n'))
    assert config.wifi.security == "WPA3"


@pytest.mark.parametrize("address", ["/var/run/usbmuxd", "UNIX:/tmp/mux.sock", "127.0.0.1:27015", "mux.local:1"])
def test_usbmuxd_address_forms(tmp_path, address):
    config = load_config(write(tmp_path, MINIMAL + f'[station]\nusbmuxd = "{address}"\n'))
    assert config.station.usbmuxd == address


@pytest.mark.parametrize(
    ("text", "line", "key", "hint"),
    [
        ('[station]\nconcurrency = "eight"\n', 4, "station.concurrency", "concurrency = 8"),
        ("[station]\nconcurrency = 0\n", 4, "station.concurrency", "from 1 to 256"),
        ("[station]\nconcurrency = true\n", 4, "station.concurrency", "whole number"),
        (
            '[station]\nlog_format = "fancy"\n',
            4,
            "station.log_format",
            'must be one of "auto", "json", "console", not "fancy"',
        ),
        ('[station]\nusbmuxd = "usbmuxd"\n', 4, "station.usbmuxd", "HOST:PORT"),
        ('[station]\nid = ""\n', 4, "station.id", "text in double quotes"),
        ('[enrollment]\nmode = "mdm"\n', 4, "enrollment.mode", 'must be one of "url", "dep", "none"'),
        ('[enrollment]\nmode = "url"\n', 3, "enrollment.url", "is missing"),
        ('[enrollment]\nmode = "url"\nurl = "ftp://mdm"\n', 5, "enrollment.url", "https://"),
        ('[steps]\nerase = "yes"\n', 4, "steps.erase", "erase = true"),
        ('[steps]\nskip_setup = "Siri"\n', 4, "steps.skip_setup", "list"),
        ('[naming]\npattern = "{org}-{serial_number}"\n', 4, "naming.pattern", "unknown placeholder {serial_number}"),
        ('[naming]\npattern = "{serial:03d}"\n', 4, "naming.pattern", "cannot be filled in"),
        ('[naming]\npattern = "{org"\n', 4, "naming.pattern", "cannot read the pattern"),
        ("[timeouts]\nerase = -5\n", 4, "timeouts.erase", "greater than 0"),
        ("[timeouts]\nretries = 1.5\n", 4, "timeouts.retries", "whole number"),
        ('[activation]\nurl = "albert.apple.com"\n', 4, "activation.url", "https://"),
        ('[profiles]\nextra = "apps.mobileconfig"\n', 4, "profiles.extra", "list of file paths"),
        ('[wifi]\nssid = "Net"\nprofile = "w.mobileconfig"\n', 5, "wifi.profile", "not both"),
        ('[wifi]\nsecurity = "WPA2"\n', 3, "wifi.ssid", "is missing"),
        ('[wifi]\nssid = "Net"\nsecurity = "WPA4"\n', 5, "wifi.security", 'must be one of "None", "WEP", "WPA"'),
        ('[wifi]\nssid = "Net"\n', 3, "wifi.password", "needs its password"),
        ('[stations]\nid = "x"\n', 3, "[stations]", "did you mean [station]?"),
        ("[station]\nconcurency = 4\n", 4, "station.concurency", "did you mean concurrency?"),
        ("[station]\nturbo = true\n", 4, "station.turbo", "[station] takes id, database"),
    ],
)
def test_each_error_names_line_key_and_hint(tmp_path, text, line, key, hint):
    path = write(tmp_path, MINIMAL + text)
    error = problems_of(path)
    assert len(error.issues) == 1, str(error)
    issue = error.issues[0]
    assert (issue.line, issue.key) == (line, key)
    message = str(error)
    assert str(path) in message
    assert f"line {line}, {key}" in message
    assert hint in message


def test_missing_organisation_is_reported(tmp_path):
    error = problems_of(write(tmp_path, "[station]\nconcurrency = 2\n"))
    assert error.issues[0].key == "organization.name"
    assert 'name = "Example School"' in str(error)


def test_key_outside_any_section(tmp_path):
    error = problems_of(write(tmp_path, 'name = "X"\n' + MINIMAL))
    assert (error.issues[0].line, error.issues[0].key) == (1, "name")
    assert "outside any section" in str(error)


def test_dotted_and_quoted_keys_are_located(tmp_path):
    error = problems_of(write(tmp_path, 'station.concurrency = "x"\n' + MINIMAL + '[steps]\n"erase" = 1\n'))
    assert [(issue.line, issue.key) for issue in error.issues] == [(1, "station.concurrency"), (5, "steps.erase")]


def test_multiline_strings_do_not_confuse_line_numbers(tmp_path):
    text = MINIMAL + '[station]\nid = """\nconcurrency = 1\n"""\nconcurrency = "x"\n'
    error = problems_of(write(tmp_path, text))
    assert error.issues[0].line == 7


def test_all_errors_are_reported_together(tmp_path):
    path = write(
        tmp_path,
        """\
        [station]
        concurrency = "eight"
        log_format = "fancy"
        [organization]
        [enrollment]
        mode = "mdm"
        [timeouts]
        erase = 0
    """,
    )
    error = problems_of(path)
    keys = [issue.key for issue in error.issues]
    assert keys == [
        "station.concurrency",
        "station.log_format",
        "organization.name",
        "enrollment.mode",
        "timeouts.erase",
    ]
    assert f"{path} has 5 problems" in str(error)
    assert [issue.line for issue in error.issues] == [2, 3, 4, 6, 8]


def test_toml_syntax_error_keeps_line_and_column(tmp_path):
    path = write(tmp_path, MINIMAL + "[station]\nconcurrency = = 3\n")
    error = problems_of(path)
    assert error.issues[0].line == 4
    assert "line 4, column" in str(error)
    assert str(path) in str(error)


def test_missing_file_says_how_to_create_it(tmp_path):
    error = problems_of(tmp_path / "absent.toml")
    assert "stationd init --config" in str(error)


@pytest.mark.parametrize(
    "wifi",
    [
        f'ssid = "Net"\npassword = "{SECRET}"\nsecurity = "None"\n',
        'ssid = "Net"\npassword = 1234567890123\n',
        'ssid = "Net"\npassword = "Zq7"\n',
        f'ssid = "Net"\npassword = "{SECRET}"\nprofile = "w.mobileconfig"\n',
        f'ssid = "Net"\npassword = "{SECRET}"\npasword = "{SECRET}"\n',
        f'ssid = "Net"\npassword = "{SECRET}"\nsecurity = 7\n',
    ],
)
def test_password_never_appears_in_errors(tmp_path, wifi):
    error = problems_of(write(tmp_path, MINIMAL + "[wifi]\n" + wifi))
    assert error.issues
    for secret in (SECRET, "1234567890123", "Zq7"):
        assert secret not in str(error)


def test_password_not_in_syntax_errors(tmp_path):
    error = problems_of(write(tmp_path, MINIMAL + f'[wifi]\nssid = "N"\npassword = "{SECRET}" trailing\n'))
    assert SECRET not in str(error)


def test_password_not_in_repr(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + f'[wifi]\nssid = "Net"\npassword = "{SECRET}"\n'))
    assert config.wifi.password == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config)


def test_wifi_mobileconfig_from_ssid_and_from_file(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + f'[wifi]\nssid = "Net"\npassword = "{SECRET}"\nhidden = true\n'))
    assert config.wifi.mobileconfig() == wifi_profile("Net", "WPA2", SECRET, True, True)
    (tmp_path / "w.mobileconfig").write_bytes(b"profile bytes")
    from_file = load_config(write(tmp_path, MINIMAL + '[wifi]\nprofile = "w.mobileconfig"\n'))
    assert from_file.wifi.mobileconfig() == b"profile bytes"


def test_naming_pattern_fills_placeholders():
    naming = NamingConfig("{org}-{model}-{port}-{n:03d}-{serial}")
    assert naming.device_name(org="Lab", serial="DMP1", model="iPad", port="A3", n=7) == "Lab-iPad-A3-007-DMP1"


def test_default_config_path(monkeypatch, tmp_path):
    monkeypatch.setenv("STATIOND_CONFIG", str(tmp_path / "custom.toml"))
    assert default_config_path() == tmp_path / "custom.toml"
    monkeypatch.delenv("STATIOND_CONFIG")
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_config_path() == Path("/etc/stationd/stationd.toml")
    assert default_database_path() == Path("/var/lib/stationd/stationd.db")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_config_path() == Path.home() / "Library/Application Support/stationd/stationd.toml"
    assert default_database_path() == Path.home() / "Library/Application Support/stationd/stationd.db"


# check_config: the checks that read other files.


def good_profile() -> bytes:
    return plistlib.dumps(
        {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": "org.example.apps",
            "PayloadUUID": "0F6B2E3A-1111-4222-8333-944455556666",
            "PayloadContent": [],
        }
    )


@pytest.fixture
def station(tmp_path):
    """A folder holding a valid identity; returns a function writing a config there and loading it."""
    create_identity(tmp_path / "identity.pem", "Example School")

    def load(extra: str = "", mode: int = 0o600) -> Config:
        path = write(tmp_path, MINIMAL + extra)
        path.chmod(mode)
        return load_config(path)

    return load


def test_check_config_passes_on_a_good_setup(station, tmp_path):
    (tmp_path / "wifi.mobileconfig").write_bytes(wifi_profile("Net", "WPA2", "password1"))
    (tmp_path / "apps.mobileconfig").write_bytes(good_profile())
    extra = '[wifi]\nprofile = "wifi.mobileconfig"\n[profiles]\nextra = ["apps.mobileconfig"]\n'
    assert check_config(station(extra)) == []


def test_check_config_reports_a_missing_identity(tmp_path):
    problems = check_config(load_config(write(tmp_path, MINIMAL)))
    assert len(problems) == 1
    assert problems[0].startswith("error: organization.identity:")
    assert "stationd identity create" in problems[0]


def test_check_config_reports_bad_profiles(station, tmp_path):
    (tmp_path / "wifi.mobileconfig").write_bytes(good_profile())
    (tmp_path / "broken.mobileconfig").write_bytes(b"not a plist")
    extra = (
        '[wifi]\nprofile = "wifi.mobileconfig"\n[profiles]\nextra = ["broken.mobileconfig", "absent.mobileconfig"]\n'
    )
    problems = check_config(station(extra))
    assert len(problems) == 3
    assert "wifi.profile" in problems[0] and "no Wi-Fi payload" in problems[0]
    assert "profiles.extra" in problems[1] and "not a property list" in problems[1]
    assert "profiles.extra" in problems[2] and "absent.mobileconfig" in problems[2]
    assert all(problem.startswith("error:") for problem in problems)


def test_check_config_warns_when_others_can_read_the_password(station, tmp_path):
    wifi = f'[wifi]\nssid = "Net"\npassword = "{SECRET}"\n'
    problems = check_config(station(wifi, mode=0o644))
    assert len(problems) == 1
    assert problems[0].startswith("warning:") and "chmod 600" in problems[0]
    assert SECRET not in problems[0]
    assert check_config(station(wifi, mode=0o600)) == []


def test_check_config_warns_about_ignored_url_and_unknown_panes(station):
    extra = '[enrollment]\nmode = "dep"\nurl = "https://mdm.example.org"\n[steps]\nskip_setup = ["Siri", "Sirri"]\n'
    problems = check_config(station(extra))
    assert len(problems) == 2
    assert all(problem.startswith("warning:") for problem in problems)
    assert "enrollment.url is ignored" in problems[0]
    assert '"Sirri"' in problems[1]


# `stationd init` and `stationd check-config`.

runner = CliRunner()


def test_cli_init_writes_a_private_loadable_config(tmp_path):
    path = tmp_path / "conf" / "stationd.toml"
    result = runner.invoke(app, ["init", "--config", str(path), "--org", "Lincoln Primary"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).organization.name == "Lincoln Primary"
    assert "stationd identity create" in result.output
    assert "stationd check-config" in result.output


def test_cli_init_refuses_to_overwrite(tmp_path):
    path = write(tmp_path, "# my settings\n")
    result = runner.invoke(app, ["init", "--config", str(path)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert path.read_text() == "# my settings\n"
    assert runner.invoke(app, ["init", "--config", str(path), "--force"]).exit_code == 0
    assert load_config(path).organization.name == "Example School"


def test_cli_init_uses_the_environment_default(tmp_path, monkeypatch):
    monkeypatch.setenv("STATIOND_CONFIG", str(tmp_path / "env.toml"))
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "env.toml").exists()


def test_cli_check_config_ok(tmp_path):
    path = tmp_path / "stationd.toml"
    runner.invoke(app, ["init", "--config", str(path)])
    create_identity(tmp_path / "identity.pem", "Example School")
    result = runner.invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output


def test_cli_check_config_lists_every_problem(tmp_path):
    path = write(tmp_path, '[station]\nconcurrency = 0\n[enrollment]\nmode = "mdm"\n')
    result = runner.invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    assert "line 2, station.concurrency" in result.output
    assert "line 4, enrollment.mode" in result.output
    assert "organization.name" in result.output
    assert "Traceback" not in result.output


def test_cli_check_config_reports_file_problems(tmp_path):
    path = write(tmp_path, MINIMAL)
    result = runner.invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    assert "error: organization.identity" in result.output
    assert "configuration OK" not in result.output


def test_cli_check_config_ok_with_warnings(tmp_path):
    create_identity(tmp_path / "identity.pem", "Example School")
    path = write(tmp_path, MINIMAL + '[steps]\nskip_setup = ["Sirri"]\n')
    result = runner.invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 0
    assert "warning:" in result.output
    assert "configuration OK (1 warning)" in result.output


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[timeouts]\nerase_start = nan\n", "timeouts.erase_start", "from 30 to 86400"),
        ("[timeouts]\nerase_start = 0.05\n", "timeouts.erase_start", "from 30 to 86400"),
        ("[timeouts]\nerase = inf\n", "timeouts.erase", "at most 86400"),
        ("[timeouts]\nactivate = -inf\n", "timeouts.activate", "greater than 0"),
        ("[timeouts]\nretries = 1000\n", "timeouts.retries", "from 0 to 20"),
        ("[plugins]\ntimeout = nan\n", "plugins.timeout", "at most 300"),
        ("[station]\nconcurrency = 100000\n", "station.concurrency", "from 1 to 256"),
    ],
)
def test_durations_and_counts_are_finite_and_bounded(tmp_path, text, key, words):
    error = problems_of(write(tmp_path, MINIMAL + text))
    assert [(issue.line, issue.key) for issue in error.issues] == [(4, key)]
    assert words in str(error)


def test_run_refuses_to_start_before_touching_an_ipad_when_a_profile_is_broken(tmp_path):
    create_identity(tmp_path / "identity.pem", "Example School")
    (tmp_path / "broken.mobileconfig").write_bytes(b"not a plist")
    path = write(
        tmp_path,
        MINIMAL + f'[station]\ndatabase = "{tmp_path / "db"}"\nusbmuxd = "{tmp_path / "mux"}"\n'
        '[profiles]\nextra = ["broken.mobileconfig"]\n',
    )
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "profiles.extra" in result.output and "broken.mobileconfig" in result.output
    assert "did not start" in result.output
    assert not (tmp_path / "db").exists(), "nothing ran: not even the database was opened"
