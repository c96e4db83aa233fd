"""One converter toolkit for the configuration file, plugin settings and emulator scenarios: the same kinds, the same
"did you mean", the same way of showing (or hiding) the value that was refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stationd.config import ConfigError, PluginsConfig, convert, load_config
from stationd.emulator.scenario import ScenarioError, parse_scenario
from stationd.plugins import PluginConfigError, PluginHost, Settings

SECRET = "hunter2-very-secret"


def config_problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "stationd.toml"
    path.write_text('[organization]\nname = "X"\n' + text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    return str(issue)


def plugin_problem(name: str, settings: dict[str, Any]) -> PluginConfigError:
    with pytest.raises(PluginConfigError) as caught:
        PluginHost(PluginsConfig(enabled=(name,), settings={name: settings}), "cart-1")
    return caught.value


def scenario_problem(device: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"device": [device]})
    return str(caught.value)


def test_the_three_readers_share_one_did_you_mean(tmp_path: Path) -> None:
    assert config_problem(tmp_path, "[station]\nconcurency = 4\n").endswith(
        "station.concurency: unknown setting; did you mean concurrency?"
    )
    assert str(plugin_problem("webhook", {"urll": "https://x.example"})) == (
        "plugins.webhook.urll: unknown setting; did you mean url?"
    )
    assert scenario_problem({"activate": True}).endswith("activate: unknown key; did you mean activated?")


def test_the_three_readers_word_a_wrong_kind_alike(tmp_path: Path) -> None:
    assert config_problem(tmp_path, '[steps]\nerase = "yes"\n').endswith(
        'steps.erase: must be true or false (without quotes), not "yes"; write for example: erase = true'
    )
    assert str(plugin_problem("terminal", {"force": "yes"})) == (
        'plugins.terminal.force: must be true or false (without quotes), not "yes"'
    )
    assert scenario_problem({"passcode": "yes"}).endswith('passcode: must be true or false (without quotes), not "yes"')
    assert scenario_problem({"passcode": 1}).endswith("passcode: must be true or false, not 1")


def test_a_refused_list_item_is_named_by_its_index(tmp_path: Path) -> None:
    assert config_problem(tmp_path, '[steps]\nskip_setup = ["Siri", 3]\n') == (
        "line 4, steps.skip_setup[1]: must be some text in double quotes, not 3"
    )
    error = plugin_problem("desktop", {"command": ["notify-send", ""]})
    assert error.key == "plugins.desktop.command[1]"
    assert str(error) == 'plugins.desktop.command[1]: must be some text in double quotes, not ""'


def test_secrets_are_shown_by_their_kind_only_and_urls_without_credentials(tmp_path: Path) -> None:
    problem = config_problem(tmp_path, f'[wifi]\nssid = "Net"\npassword = ["{SECRET}"]\n')
    assert "wifi.password: must be some text in double quotes, not a list" in problem and SECRET not in problem
    table = {"token": 12345678, "where": f"ftp://u:{SECRET}@host/?k={SECRET}"}
    settings = Settings("example", table, ("token", "where"))
    with pytest.raises(PluginConfigError) as caught:
        settings.text("token")
    assert str(caught.value) == "plugins.example.token: must be some text in double quotes, not a number"
    with pytest.raises(PluginConfigError) as caught:
        settings.read("where", None, convert.url)
    assert SECRET not in str(caught.value) and '"ftp://***@host/?k=***"' in str(caught.value)


def test_numbers_are_finite_everywhere(tmp_path: Path) -> None:
    assert "timeouts.erase: must be a number of seconds" in config_problem(tmp_path, "[timeouts]\nerase = inf\n")
    assert plugin_problem("webhook", {"url": "https://x.example", "timeout": float("nan")}).key == (
        "plugins.webhook.timeout"
    )
    assert scenario_problem({"detach_after": float("inf")}).endswith(
        "detach_after: must be a number of seconds, 0 or more, not inf"
    )


def test_choices_match_whatever_their_case_and_come_back_as_spelt() -> None:
    host = PluginHost(
        PluginsConfig(enabled=("webhook",), settings={"webhook": {"url": "https://x.example", "format": " Slack "}}),
        "cart-1",
    )
    assert host.pm.get_plugin("webhook").fmt == "slack"
    device = {"behaviour": {"erase_reply": "DROP"}, "syslog": [{"message": "m", "level": "error"}]}
    spec = parse_scenario({"device": [device]}).specs[0]
    assert spec.behaviour.erase_reply == "drop"
    assert spec.syslog[0].level == "Error"
    assert scenario_problem({"behaviour": {"dep_source": True}}).endswith(
        "behaviour.dep_source: must be one of 1, 0, not true"
    )


def test_a_url_that_cannot_be_parsed_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    assert "activation.url: must be a web address starting with https:// or http://" in config_problem(
        tmp_path, '[activation]\nurl = "http://[oops"\n'
    )


@pytest.mark.parametrize(
    ("kind", "value", "sentence"),
    [
        (convert.whole(1, 256), 0, "must be a whole number from 1 to 256, not 0"),
        (convert.whole(0, 2**64 - 1), -1, "must be a whole number, 0 or more, not -1"),
        (convert.number(0, 300, above=True), 0, "must be a number, greater than 0 and at most 300, not 0"),
        (convert.number(0.1), "1", 'must be a number, 0.1 or more (without quotes), not "1"'),
        (convert.choice(("auto", "json")), True, 'must be one of "auto", "json", not true'),
        (convert.table(("level",)), {"levle": 1}, "unknown key; did you mean level?"),
        (convert.items, "x", 'must be a list like [ ... ], not "x"'),
    ],
)
def test_kinds_word_their_refusals(kind: convert.Converter, value: Any, sentence: str) -> None:
    with pytest.raises(convert.Invalid) as caught:
        kind(value)
    assert caught.value.explain() == sentence


def test_a_long_text_is_cut_short_when_shown() -> None:
    assert convert.shown("x" * 100) == '"' + "x" * 55 + '..."'
    assert len(convert.shown("x" * 100)) == convert.SHOWN_LENGTH
