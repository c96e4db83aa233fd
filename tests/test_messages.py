"""Every failure says what happened and only advice that can help; every code has its own title."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rig import make_rig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stationd import errors
from stationd.config import ActivationConfig, StepsConfig
from stationd.emulator import generated_spec
from stationd.httpserve import HTTPServer

NO_ERASE = StepsConfig(erase=False)


def test_every_code_has_one_title_and_codes_are_unique() -> None:
    classes = [cls for cls in errors._all(errors.StationError) if cls is not errors.StationError]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert cls.title and cls.title != errors.StationError.title, cls
        assert errors.title(cls.code) == cls.title
    assert errors.title("something_new") == "Something new"


@pytest.mark.anyio
async def test_each_refusal_gets_its_own_code_and_advice_that_can_help(tmp_path: Path) -> None:
    prohibited = generated_spec(0, setup_assistant=False, supervised_by="Other School", allow_pairing=False)
    set_up = generated_spec(1, setup_assistant=False, trust_dialog_accepts=True)
    unsupervised = generated_spec(2, supervised_by="Other School", configuration_supervised=False)
    supervised = generated_spec(3, supervised_by="Other School")
    specs = [prohibited, set_up, unsupervised, supervised]
    async with make_rig(tmp_path, specs) as rig:
        finals = await rig.run_until_settled([s.udid for s in specs], steps=NO_ERASE)
    failed = {udid: (event.data["error_code"], event.data["error_message"]) for udid, event in finals.items()}

    code, message = failed[prohibited.udid]
    assert code == "pairing_prohibited" and "restriction" in message and "Trust" not in message
    assert "Error" not in message and "MCProtected" not in message

    code, message = failed[set_up.udid]
    assert code == "already_set_up" and "erase it" in message and "replug it to try" not in message

    code, message = failed[unsupervised.udid]
    assert code == "configured_elsewhere" and "not supervised" in message and "supervised by" not in message

    code, message = failed[supervised.udid]
    assert code == "supervised_elsewhere" and "supervised by Other School" in message and "erase it" in message


@pytest.mark.anyio
async def test_an_activation_url_answering_404_says_to_check_the_setting(tmp_path: Path) -> None:
    spec = generated_spec(0, activated=False)
    async with make_rig(tmp_path, [spec]) as rig:
        activation = ActivationConfig(url=rig.mdm_url + "/nowhere")
        finals = await rig.run_until_settled([spec.udid], activation=activation)
    event = finals[spec.udid]
    assert event.step == "activate" and event.data["error_code"] == "activation_server_refused"
    message = event.data["error_message"]
    assert "404" in message and "[activation] url" in message
    assert "erase" not in message.lower() and "replug" not in message.lower()


@pytest.mark.anyio
async def test_a_final_failure_of_a_transient_error_does_not_promise_a_retry(tmp_path: Path) -> None:
    async def overloaded(request: Request) -> Response:
        return Response("try later", status_code=503)

    apple = HTTPServer(Starlette(routes=[Route("/{path:path}", overloaded, methods=["POST"])]))
    await apple.start()
    spec = generated_spec(0, activated=False)
    try:
        async with make_rig(tmp_path, [spec]) as rig:
            finals = await rig.run_until_settled([spec.udid], activation=ActivationConfig(url=apple.url))
    finally:
        await apple.stop()
    message = finals[spec.udid].data["error_message"]
    assert finals[spec.udid].data["error_code"] == "activation_server_unavailable"
    assert not re.search(r"retr(y|ies|ying) by itself|; retrying", message)
    assert "tried 4 times" in message and "replug" in message
