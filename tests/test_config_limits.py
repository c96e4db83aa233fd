"""Bounded configuration input: nesting, text lengths, list sizes, naming widths and tokens fail with key and line;
`listen = ""` turns the API off; check-config loads the plugins, warns about plain http:// and about a file that
holds secrets others can read."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stationd.cli import app
from stationd.config import ConfigError, check_config, load_config
from stationd.identity import create_identity

TOKEN = "0123456789abcdef0123"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "stationd.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize("depth", [5000, 300])
def test_deep_nesting_is_refused_with_its_line_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    path = write(tmp_path, f'[organization]\nname = "X"\n\n[steps]\nskip_setup = {"[" * depth}{"]" * depth}\n')
    assert problems(path) == [
        ("line 5: lists or tables nest more than 8 levels deep; no setting needs that, check the brackets")
    ]


def test_nesting_that_settings_need_and_brackets_inside_strings_are_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[organization]\nname = "[[[[[[[[[[ X"  # [[[[[[[[[[\n[plugins.leds]\n'
        'ports = { "Hub A · 1" = { green = "a", red = "b" } }\n',
    )
    assert load_config(path).organization.name == "[[[[[[[[[[ X"


def test_long_texts_long_lists_and_deep_values_are_refused_with_key_and_line(tmp_path: Path) -> None:
    items = ", ".join(f'"P{i}"' for i in range(1001))
    deep = "{ a = " * 7 + '"x"' + " }" * 7
    path = write(
        tmp_path,
        f'[organization]\nname = "{"x" * 3000}"\n[steps]\nskip_setup = [{items}]\n'
        f"[plugins.webhook]\nheaders = {deep}\n",
    )
    found = problems(path)
    assert found[0] == "line 2, organization.name: is longer than 2,048 characters (3,000)"
    assert found[1] == "line 4, steps.skip_setup: holds more than 1,000 items (1,001)"
    assert found[2].startswith("line 5, plugins.webhook: nests lists or tables more than 8 levels deep")
    assert len(found) == 3


def test_a_huge_placeholder_width_is_refused_before_anything_is_filled(tmp_path: Path) -> None:
    path = write(tmp_path, '[organization]\nname = "X"\n[naming]\npattern = "{org}-{n:99999999}"\n')
    assert problems(path) == [
        (
            "line 4, naming.pattern: {n:99999999} is 99,999,999 characters wide; a placeholder is at most 64 wide; "
            'write for example: pattern = "{org}-{n:03d}"'
        )
    ]
    assert load_config(write(tmp_path, '[organization]\nname = "X"\n[naming]\npattern = "{org}-{n:05d}"\n'))


@pytest.mark.parametrize("token", ["ünïcode-token-0123456789", "has spaces in it 0123456789"])
def test_a_token_no_request_header_can_carry_is_refused(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, f'[organization]\nname = "X"\n[api]\ntoken = "{token}"\n')
    (found,) = problems(path)
    assert found.startswith("line 4, api.token: the token must be ASCII letters, digits and punctuation")
    assert token not in found


def test_an_empty_listen_turns_the_api_off(tmp_path: Path) -> None:
    path = write(tmp_path, '[organization]\nname = "X"\n[api]\nlisten = ""\n')
    assert load_config(path).api.listen is None


def configured(tmp_path: Path, extra: str, mode: int = 0o600) -> Path:
    identity = create_identity(tmp_path / "identity.pem", "X", force=True)
    return write(tmp_path, f'[organization]\nname = "X"\nidentity = "{identity.path}"\n{extra}', mode)


def test_check_config_loads_the_plugins_with_their_settings(tmp_path: Path) -> None:
    path = configured(
        tmp_path,
        '[plugins]\nenabled = ["webhook"]\n[plugins.webhook]\nurl = "ftp://hooks.example"\n'
        '[plugins.leds]\ndriver = "dry-run"\n',
    )
    result = CliRunner().invoke(app, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    assert "error: plugins.webhook.url: must start with https://" in result.output
    assert 'warning: [plugins.leds] is ignored: add "leds" to plugins.enabled' in result.output


def test_plain_http_outside_this_machine_is_warned_about(tmp_path: Path) -> None:
    config = load_config(
        configured(
            tmp_path,
            '[enrollment]\nmode = "url"\nurl = "http://mdm.example/enroll"\n'
            '[activation]\nurl = "http://activation.example/deviceservices"\n',
        )
    )
    found = check_config(config)
    assert any(line.startswith("warning: enrollment.url uses http:// to mdm.example") for line in found)
    assert any(line.startswith("warning: activation.url uses http:// to activation.example") for line in found)
    loopback = load_config(configured(tmp_path, '[enrollment]\nmode = "url"\nurl = "http://127.0.0.1:7782/enroll"\n'))
    assert not any("http://" in line for line in check_config(loopback))


@pytest.mark.parametrize(("mode", "who"), [(0o644, "other users"), (0o640, "its group"), (0o600, None)])
def test_a_file_holding_secrets_that_others_can_read_is_warned_about(tmp_path: Path, mode: int, who: str) -> None:
    path = configured(
        tmp_path,
        f'[api]\ntoken = "{TOKEN}"\n[enrollment]\nmode = "url"\nurl = "https://u:p@mdm.example/enroll?invitation=T"\n',
        mode,
    )
    warnings = [line for line in check_config(load_config(path)) if "can read it" in line]
    if who is None:
        assert warnings == []
    else:
        (warning,) = warnings
        assert "holds the API token, credentials in enrollment.url" in warning and f"{who} can read it" in warning
        assert f"chmod 600 {path}" in warning and TOKEN not in warning and "invitation=T" not in warning
