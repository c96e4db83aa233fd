"""The virtual iPad's apps, files, console, battery and storage, as pymobiledevice3's own service clients see them."""

from __future__ import annotations

import asyncio
import io
import plistlib
import re
import zipfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pymobiledevice3.exceptions import AfcException, AfcFileNotFoundError, AppInstallError, ConnectionTerminatedError
from pymobiledevice3.services.afc import AfcError, AfcService
from pymobiledevice3.services.diagnostics import DiagnosticsService
from pymobiledevice3.services.installation_proxy import InstallationProxyService
from pymobiledevice3.services.os_trace import OsTraceService
from test_emulator import lockdown, running, spec

from stationd.emulator.apps import App
from stationd.emulator.battery import Battery, BatterySpec
from stationd.emulator.console import Line
from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import Fault
from stationd.emulator.media import MEDIA_LIMIT
from stationd.emulator.scenario import ScenarioError, parse_scenario
from stationd.emulator.storage import GB, StorageSpec

pytestmark = pytest.mark.anyio

INSTALLATION_PROXY = "com.apple.mobile.installation_proxy"


def make_ipa(bundle_id: str = "org.example.reader", version: str = "2.1", build: str = "210", **info: Any) -> bytes:
    """An .ipa as Xcode exports one (without a signature): Payload/Name.app with an Info.plist and an executable."""
    plist = {
        "CFBundleIdentifier": bundle_id,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": build,
        "CFBundleExecutable": "Reader",
        "CFBundleName": "Reader",
        "CFBundleSupportedPlatforms": ["iPhoneOS"],
        "MinimumOSVersion": "16.0",
        "UIDeviceFamily": [1, 2],
    }
    plist.update({k: v for k, v in info.items() if v is not None})
    for key in [k for k, v in info.items() if v is None]:
        plist.pop(key)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Payload/Reader.app/Info.plist", plistlib.dumps(plist))
        archive.writestr("Payload/Reader.app/Reader", b"\xcf\xfa\xed\xfe" + bytes(4096))
    return out.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    """A ZIP archive holding `files` (name: bytes), for packages that are not well-formed apps."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


async def until(condition: Any, seconds: float = 10) -> None:
    """Wait for a state the emulator reaches on its own (a stream noticing its client left)."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - the emulator's own state has no event to wait on
            await asyncio.sleep(0.01)


def requests(emulator: Emulator, udid: str, channel: str) -> list[tuple[str, str]]:
    return [(e["request"], e["result"]) for e in emulator.device(udid).request_log if e["channel"] == channel]


# -- installation_proxy ------------------------------------------------------------------------------------------------
async def test_browse_pages_apps_with_the_attributes_asked_for(tmp_path: Path) -> None:
    apps = [App(f"org.example.app{i:02d}", f"App {i}", version="1.0", build=str(i)) for i in range(25)]
    device_spec = spec(apps=apps)
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        service = await client.start_lockdown_service(INSTALLATION_PROXY)
        await service.send_plist(
            {
                "Command": "Browse",
                "ClientOptions": {
                    "ApplicationType": "User",
                    "ReturnAttributes": ["CFBundleIdentifier", "CFBundleShortVersionString"],
                },
            }
        )
        pages = []
        while (message := await service.recv_plist())["Status"] != "Complete":
            pages.append(message)
        await service.close()
        assert [(p["Status"], p["CurrentIndex"], p["CurrentAmount"], p["Total"]) for p in pages] == [
            ("BrowsingApplications", 0, 20, 25),
            ("BrowsingApplications", 20, 5, 25),
        ]
        first = pages[0]["CurrentList"][0]
        assert first == {"CFBundleIdentifier": "org.example.app00", "CFBundleShortVersionString": "1.0"}

        async with InstallationProxyService(client) as installation:
            system = await installation.browse({"ApplicationType": "System"}, ["CFBundleIdentifier", "ApplicationType"])
            assert {"CFBundleIdentifier": "com.apple.mobilesafari", "ApplicationType": "System"} in system
            assert len(await installation.browse()) == 25 + len(system)
            everything = await installation.get_apps(calculate_sizes=True)
            assert everything["org.example.app07"]["CFBundleVersion"] == "7"
            assert everything["org.example.app07"]["StaticDiskUsage"] == 50_000_000
            assert list(await installation.get_apps(bundle_identifiers=["org.example.app03"])) == ["org.example.app03"]
        await client.close()


async def test_install_an_uploaded_ipa_then_uninstall(tmp_path: Path) -> None:
    device_spec = spec(syslog=[Line("mdmd", "booted")])
    async with running(device_spec) as emulator:
        device = emulator.device(device_spec.udid)
        free_before = device.contents.free_bytes()
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        progress: list[float] = []
        async with InstallationProxyService(client) as installation:
            await installation.install_from_bytes(make_ipa(), handler=lambda percent: progress.append(percent))
            app = (await installation.get_apps(application_type="User"))["org.example.reader"]
            assert (app["CFBundleShortVersionString"], app["CFBundleVersion"]) == ("2.1", "210")
            assert app["Path"].endswith("/Reader.app")
            assert app["Container"].startswith("/private/var/mobile/Containers/")
        assert progress == [5, 15, 20, 20, 30, 30, 40, 50, 60, 70, 80, 90]
        snapshot = device.snapshot()
        assert {"bundle_id": "org.example.reader", "version": "2.1", "build": "210", "type": "User"}.items() <= next(
            a for a in snapshot["apps"] if a["bundle_id"] == "org.example.reader"
        ).items()
        assert snapshot["files"]["files"] == {}  # pymobiledevice3 removed its upload from PublicStaging
        assert device.contents.free_bytes() < free_before
        assert "installd[96] <Notice>: Installed org.example.reader version 2.1 (210)" in snapshot["console"]["recent"]

        async with InstallationProxyService(client) as installation:
            container = (await installation.get_apps(application_type="User"))["org.example.reader"]["Container"]
            await installation.install_from_bytes(make_ipa(version="2.2", build="220"))  # an upgrade keeps the data
            again = (await installation.get_apps(application_type="User"))["org.example.reader"]
            assert (again["CFBundleShortVersionString"], again["Container"]) == ("2.2", container)
            await installation.uninstall("org.example.reader")
            assert await installation.get_apps(application_type="User") == {}
            await installation.uninstall("org.example.never-installed")
            with pytest.raises(AppInstallError, match="UninstallProhibited"):
                await installation.uninstall("com.apple.mobilesafari")
        await client.close()
        assert device.contents.free_bytes() == free_before
        assert ("Uninstall", "UninstallProhibited") in requests(emulator, device_spec.udid, "installation_proxy")


@pytest.mark.parametrize(
    ("package", "error"),
    [
        (b"this is not a zip archive", "PackageExtractionFailed"),
        (make_ipa(CFBundleIdentifier=None), "MissingBundleIdentifier"),
        (make_ipa(CFBundleVersion=None), "MissingBundleVersion"),
        (make_ipa(CFBundleExecutable="Missing"), "MissingBundleExecutable"),
        (make_ipa(CFBundleSupportedPlatforms=["iPhoneSimulator"]), "DeviceFamilyNotSupported"),
        (make_ipa(UIDeviceFamily=[3]), "DeviceFamilyNotSupported"),
        (make_ipa(MinimumOSVersion="99.0"), "DeviceOSVersionTooLow"),
    ],
)
async def test_install_refuses_a_bad_package(tmp_path: Path, package: bytes, error: str) -> None:
    """Uploaded as it is (pymobiledevice3 itself refuses some before the upload), installation_proxy says why."""
    device_spec = spec()
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with AfcService(client) as afc:
            await afc.makedirs("/PublicStaging")
            await afc.set_file_contents("/PublicStaging/bad.ipa", package)
        async with InstallationProxyService(client) as installation:
            with pytest.raises(AppInstallError, match=f"^{error}: "):
                await installation.send_package("Install", {}, None, "/PublicStaging/bad.ipa")
            with pytest.raises(AppInstallError, match="^PackageExtractionFailed: .*no such file"):
                await installation.send_package("Install", {}, None, "/PublicStaging/absent.ipa")
            assert await installation.get_apps(application_type="User") == {}
        await client.close()


async def test_install_refuses_a_zip_without_an_app_or_info_plist(tmp_path: Path) -> None:
    archive = zipped
    device_spec = spec()
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with AfcService(client) as afc:
            await afc.set_file_contents("/Downloads/flat.ipa", archive({"readme.txt": b"hello"}))
            await afc.set_file_contents("/Downloads/noplist.ipa", archive({"Payload/X.app/X": b"binary"}))
            await afc.set_file_contents("/Downloads/junk.ipa", archive({"Payload/X.app/Info.plist": b"{junk"}))
        async with InstallationProxyService(client) as installation:
            refusals = [("flat", "no Payload/\\*.app"), ("noplist", "has no Info.plist"), ("junk", "not a plist")]
            for name, message in refusals:
                with pytest.raises(AppInstallError, match=f"^PackageInspectionFailed: .*{message}"):
                    await installation.send_package("Install", {}, None, f"/Downloads/{name}.ipa")
            service = await client.start_lockdown_service(INSTALLATION_PROXY)
            reply = await service.send_recv_plist({"Command": "Install", "ClientOptions": {}})
            assert reply["Error"] == "MissingPackagePath"
            assert (await service.send_recv_plist({"Command": "Frobnicate"}))["Error"] == "UnknownCommand"
            await service.close()
        await client.close()


async def test_a_scenario_fault_reaches_installation_proxy(tmp_path: Path) -> None:
    device_spec = spec(faults=[Fault("Install", "error")])
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with InstallationProxyService(client) as installation:
            with pytest.raises(AppInstallError, match="^APIInternalError: The device is busy"):
                await installation.install_from_bytes(make_ipa())
            await installation.install_from_bytes(make_ipa())  # the fault was for the first try only
            assert list(await installation.get_apps(application_type="User")) == ["org.example.reader"]
        await client.close()


# -- AFC ---------------------------------------------------------------------------------------------------------------
async def test_afc_files_live_in_the_ipads_own_tree(tmp_path: Path) -> None:
    device_spec = spec()
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with AfcService(client) as afc:
            assert await afc.listdir("/") == ["Books", "DCIM", "Downloads", "Photos", "iTunes_Control"]
            await afc.makedirs("/PublicStaging/deep/er")
            await afc.set_file_contents("/PublicStaging/deep/a.bin", b"x" * 100_000)
            assert (await afc.stat("/PublicStaging/deep/a.bin"))["st_size"] == 100_000
            assert await afc.isdir("/PublicStaging/deep")
            assert await afc.get_file_contents("PublicStaging/deep/a.bin") == b"x" * 100_000
            await afc.rename("/PublicStaging/deep/a.bin", "/PublicStaging/b.bin")
            assert await afc.listdir("/PublicStaging") == ["b.bin", "deep"]
            with pytest.raises(AfcException):
                await afc.rm_single("/PublicStaging")  # not empty
            assert await afc.rm("/PublicStaging") == []
            assert not await afc.exists("/PublicStaging")
            with pytest.raises(AfcFileNotFoundError):
                await afc.get_file_contents("/../../../../etc/passwd")  # the Media root is the top
            assert await afc.listdir("/../..") == await afc.listdir("/")
            info = await afc.get_device_info()
            assert info["Model"] == device_spec.product_type and int(info["FSFreeBytes"]) > 50 * GB
        await client.close()
        assert emulator.device(device_spec.udid).snapshot()["files"] == {"bytes": 0, "files": {}}


async def test_afc_refuses_oversized_writes_and_a_full_ipad(tmp_path: Path) -> None:
    full = spec(1, storage=StorageSpec(capacity_gb=16, free_gb=0))
    roomy = spec(0)
    async with running(roomy, full) as emulator:
        client = await lockdown(emulator, roomy.udid, tmp_path / "a")
        async with AfcService(client) as afc:
            handle = await afc.fopen("/Downloads/big.bin", "w")
            with pytest.raises(AfcException) as refused:
                await afc.fwrite(handle, bytes(9 * 1024 * 1024), chunk_size=9 * 1024 * 1024)  # one 9 MiB packet
            assert refused.value.status == AfcError.TOO_MUCH_DATA
            await afc.fwrite(handle, b"still usable")
            await afc.fclose(handle)
            assert await afc.get_file_contents("/Downloads/big.bin") == b"still usable"
            handle = await afc.fopen("/Downloads/huge.bin", "w")
            chunk = bytes(8 * 1024 * 1024)
            with pytest.raises(AfcException) as refused:
                for _ in range(MEDIA_LIMIT // len(chunk) + 1):
                    await afc.fwrite(handle, chunk)
            assert refused.value.status == AfcError.NO_SPACE_LEFT
            await afc.fclose(handle)
            await afc.rm_single("/Downloads/huge.bin")
        await client.close()

        client = await lockdown(emulator, full.udid, tmp_path / "b")
        async with AfcService(client) as afc:
            with pytest.raises(AfcException) as refused:
                await afc.set_file_contents("/Downloads/one.bin", b"1")
            assert refused.value.status == AfcError.NO_SPACE_LEFT
        service = await client.start_lockdown_service("com.apple.afc")
        await service.sendall(b"NOTMAGIC" + bytes(32))  # not an AFC packet: the device hangs up
        with pytest.raises(ConnectionTerminatedError):
            await service.recvall(1)
        await service.close()
        await client.close()
        assert ("0x0", "closed:invalid header") in requests(emulator, full.udid, "afc")


# -- console -----------------------------------------------------------------------------------------------------------
SYSLOG_LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.-]+(\([\w.-]+\))?\[\d+\] <\w+>: .+\n$")


async def test_syslog_relay_streams_lines_until_the_client_leaves(tmp_path: Path) -> None:
    device_spec = spec(syslog=[Line("mdmd", "Enrollment request failed: timeout", "Error", 212)], device_name="Cart 3")
    async with running(device_spec, speed=0.001) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        service = await client.start_lockdown_service("com.apple.syslog_relay")
        data = b""
        while data.count(b"\n\x00") < 10:
            data += await service.recv_any(4096)
        lines = [line.decode() + "\n" for line in data.split(b"\n\x00")[:10]]
        assert all(SYSLOG_LINE.match(line) for line in lines), lines
        assert " Cart-3 mdmd[212] <Error>: Enrollment request failed: timeout\n" in lines[0]
        await service.close()
        await until(lambda: ("stream", "ended") in requests(emulator, device_spec.udid, "syslog_relay"))

        service = await client.start_lockdown_service("com.apple.syslog_relay")
        await service.recv_any(4096)
        emulator.unplug(device_spec.udid)  # pulling the cable ends the stream too
        await until(lambda: requests(emulator, device_spec.udid, "syslog_relay").count(("stream", "ended")) == 2)
        await service.close()
        await client.close()


async def test_os_trace_relay_entries_parse_in_pymobiledevice3(tmp_path: Path) -> None:
    device_spec = spec(syslog=[Line("mdmd", "Enrollment request failed: timeout", "Error", 212)])
    async with running(device_spec, speed=0.001) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with OsTraceService(client) as trace:
            entries = []
            async for entry in trace.syslog():
                entries.append(entry)
                if len(entries) == 12:
                    break
        assert (entries[0].filename.rsplit("/", 1)[-1], entries[0].pid, entries[0].level.name, entries[0].message) == (
            "mdmd",
            212,
            "ERROR",
            "Enrollment request failed: timeout",
        )
        assert {e.pid for e in entries[1:]} > {34, 52}  # background chatter from several processes
        assert any(e.label is not None and e.label.subsystem == "com.apple.powerd" for e in entries)
        async with OsTraceService(client) as trace:
            only_powerd = []
            async for entry in trace.syslog(pid=52):
                only_powerd.append(entry)
                if len(only_powerd) == 2:
                    break
        assert {e.pid for e in only_powerd} == {52} and "Battery at" in only_powerd[0].message
        pids = (await OsTraceService(client).get_pid_list())["Payload"]
        assert pids["52"]["ProcessName"] == "powerd"
        await client.close()
        await until(lambda: requests(emulator, device_spec.udid, "os_trace_relay").count(("stream", "ended")) == 2)


# -- battery, diagnostics, lockdown domains ----------------------------------------------------------------------------
def test_battery_rises_on_a_charging_port_and_falls_otherwise() -> None:
    battery = Battery(BatterySpec(level=10, rate=1.0, drain=0.5), now=0)
    assert battery.level(600) == 5 and not battery.is_charging(0)  # not plugged in yet: it drains from t=0
    battery.power(True, 60)  # plugged in after a minute: 9.5 %
    assert battery.level(60 + 30 * 60) == pytest.approx(39.5) and battery.is_charging(60)
    assert battery.level(10_000_000) == 100 and battery.fully_charged(10_000_000)
    assert not battery.is_charging(10_000_000) and battery.lockdown_domain(10_000_000)["ExternalConnected"]
    battery.power(False, 60 + 30 * 60)
    assert battery.level(60 + 50 * 60) == pytest.approx(29.5)
    assert battery.level(10_000_000) == 0
    weak_hub = Battery(BatterySpec(level=50, charging=False, drain=1.0), now=0)
    weak_hub.power(True, 0)
    assert weak_hub.level(600) == 40 and not weak_hub.is_charging(600)
    assert weak_hub.lockdown_domain(600) == {
        "BatteryCurrentCapacity": 40,
        "BatteryIsCharging": False,
        "ExternalChargeCapable": False,
        "ExternalConnected": True,
        "FullyCharged": False,
        "GasGaugeCapability": True,
        "HasBattery": True,
    }


async def test_emulator_time_scales_with_speed_and_stands_still_at_zero() -> None:
    async with running(spec(), speed=0.001) as emulator:
        before = emulator.clock()
        await asyncio.sleep(0.01)
        assert emulator.clock() - before >= 10
    async with running(spec(battery=BatterySpec(level=10, rate=100.0)), speed=0) as emulator:
        device = next(iter(emulator.devices.values()))
        assert emulator.clock() == 0 and device.snapshot()["battery"]["level"] == 10


async def test_diagnostics_battery_and_lockdown_domains(tmp_path: Path) -> None:
    device_spec = spec(
        battery=BatterySpec(level=37, rate=0, cycle_count=311, health=88),
        storage=StorageSpec(capacity_gb=128, free_gb=90),
        apps=[App("org.example.notes", "Notes", size=10**9)],
    )
    async with running(device_spec, speed=0) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with DiagnosticsService(client) as diagnostics:
            battery = await diagnostics.get_battery()
            assert (battery["CurrentCapacity"], battery["IsCharging"], battery["CycleCount"]) == (37, True, 311)
            assert battery["ExternalConnected"] and battery["BatteryData"]["MaximumCapacityPercent"] == 88
            assert battery["NominalChargeCapacity"] == battery["DesignCapacity"] * 88 // 100
            assert await diagnostics.ioregistry(name="AppleSmartBattery") == battery
            assert await diagnostics.ioregistry(name="AppleBCMWLANSkywalkInterface") in ({}, None)
            assert (await diagnostics.info("GasGauge"))["GasGauge"]["CycleCount"] == 311
            raw = diagnostics.service
            assert (await raw.send_recv_plist({"Request": "Frobnicate"}))["Status"] == "UnknownRequest"
            assert (await raw.send_recv_plist({"Request": "Goodbye"}))["Status"] == "Success"
            with pytest.raises(ConnectionTerminatedError):
                await raw.recv_plist()

        usage = await client.get_value(domain="com.apple.disk_usage")
        assert usage["TotalDiskCapacity"] == 128 * GB and usage["TotalDataAvailable"] == 90 * GB
        assert usage["AmountDataAvailable"] < usage["TotalDataAvailable"] < usage["TotalDataCapacity"]
        assert await client.get_value(domain="com.apple.disk_usage", key="TotalDiskCapacity") == 128 * GB
        power = await client.get_value(domain="com.apple.mobile.battery")
        assert (power["BatteryCurrentCapacity"], power["BatteryIsCharging"], power["HasBattery"]) == (37, True, True)
        assert client.all_values["EthernetAddress"] != client.all_values["BluetoothAddress"] != device_spec.wifi_address
        await client.close()

        device = emulator.device(device_spec.udid)
        device.wipe()  # what an erase leaves: system apps only, the user's space free again
        assert [a["type"] for a in device.snapshot()["apps"]] == ["System"] * 7
        assert device.snapshot()["storage"]["free"] == StorageSpec(128).fresh_free
        assert device.snapshot()["battery"]["level"] == 37


async def test_control_api_sets_the_battery() -> None:
    device_spec = spec(battery=BatterySpec(level=50, rate=0, drain=0))
    async with running(device_spec, control_address="127.0.0.1:0") as emulator:
        async with httpx.AsyncClient(base_url=emulator.control_url or "", timeout=10) as http:
            url = f"/devices/{device_spec.udid}/battery"
            state = (await http.post(url, json={"level": 12, "charging": False})).json()["battery"]
            assert (state["level"], state["charging"], state["charges_when_plugged"]) == (12, False, False)
            refused = await http.post(url, json={"level": 140})
            assert refused.status_code == 400 and "battery.level: must be a percentage from 0 to 100" in refused.text
            refused = await http.post(url, json={"cycles": 3})
            assert refused.status_code == 400 and "cycles: unknown key" in refused.text
            added = await http.post("/devices", json={"apps": ["org.example.x"], "battery": {"level": 5}})
            assert added.status_code == 201 and added.json()["battery"]["percent"] == 5
            assert "org.example.x" in [a["bundle_id"] for a in added.json()["apps"]]
            refused = await http.post("/devices", json={"apps": [{"bundle_id": "not a bundle id"}]})
            assert refused.status_code == 400 and "apps[0].bundle_id: must be a bundle identifier" in refused.text


# -- scenario keys -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"apps": "org.example.a"}, "apps: must be a list"),
        ({"apps": [{"name": "A"}]}, "apps[0].bundle_id: is missing"),
        ({"apps": ["com.apple.Preferences"]}, "apps[0].bundle_id: is a system app"),
        ({"apps": ["org.example.a", "org.example.a"]}, "apps[1]: lists org.example.a twice"),
        ({"apps": [{"bundle_id": "org.example.a", "size": 3}]}, "apps[0].size: unknown key; did you mean size_mb?"),
        ({"storage": {"capacity_gb": 8}}, "storage.capacity_gb: must be a size in GB from 16 to 4096"),
        ({"storage": {"capacity_gb": 64, "free_gb": 60}}, "storage.free_gb: must be a size in GB from 0 to 53.5"),
        (
            {"storage": {"free_gb": 53}, "apps": [{"bundle_id": "org.x.y", "size_mb": 1000}]},
            "storage.free_gb: leaves no room for the apps listed",
        ),
        ({"battery": {"level": -1}}, "battery.level: must be a percentage from 0 to 100"),
        ({"battery": {"charging": "yes"}}, "battery.charging: must be true or false"),
        ({"battery": {"health": 101}}, "battery.health: must be a whole number from 0 to 100"),
        ({"battery": {"levle": 3}}, "battery.levle: unknown key; did you mean level?"),
        ({"syslog": [{"process": "md md", "message": "x"}]}, "syslog[0].process: must be a process name"),
        ({"syslog": [{"message": "two\nlines"}]}, "syslog[0].message: must be one line"),
        ({"syslog": [{"message": "x", "level": "Loud"}]}, 'syslog[0].level: must be one of "Notice", "Info"'),
        ({"latency": {"install": -1}}, "latency.install: must be a number of seconds, 0 or more"),
    ],
)
def test_scenario_keys_are_checked(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario({"device": [device]})
    assert f"[[device]] #1: {message}" in str(error.value)


def test_scenario_keys_build_the_ipad() -> None:
    scenario = parse_scenario(
        {
            "defaults": {"battery": {"rate": 2.0}},
            "device": [
                {
                    "apps": [
                        "org.example.a",
                        {"bundle_id": "org.example.b", "version": "3.1", "build": "77", "size_mb": 12},
                    ],
                    "storage": {"capacity_gb": 256, "free_gb": 200},
                    "battery": {"level": 10, "charging": True, "cycle_count": 5, "health": 91},
                    "syslog": [
                        "kernel says hi",
                        {"process": "mdmd", "message": "checked in", "level": "Info", "pid": 88},
                    ],
                    "latency": {"install": 0.5},
                }
            ],
        }
    )
    device_spec = scenario.specs[0]
    assert device_spec.battery == BatterySpec(level=10, charging=True, rate=2.0, cycle_count=5, health=91)
    assert [(a.bundle_id, a.version, a.build, a.size) for a in device_spec.apps] == [
        ("org.example.a", "1.0", "1.0", 50_000_000),
        ("org.example.b", "3.1", "77", 12_000_000),
    ]
    assert device_spec.storage == StorageSpec(256, 200) and device_spec.latency.install == 0.5
    assert [(line.process, line.level, line.pid) for line in device_spec.syslog] == [
        ("kernel", "Notice", 0),
        ("mdmd", "Info", 88),
    ]
