"""The web console in a real browser: headless Chromium (Debian's package) driven by Selenium,
against a running server (none driver). Sign in (a wrong secret refused), launch an instance from
the form and watch it reach `running` without reloading, read its console output, stop and
terminate it; add and remove a security-group rule; create a volume and attach it; a second
account sees none of the first's. It also makes the README's screenshots (docs/console/).
The serial console (xterm.js) is typed into here on the none driver's pretend terminal; a real
guest's getty is logged in to from Chromium in test_guests.py, which makes that screenshot."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from .conftest import OTHER_ACCESS_KEY, OTHER_SECRET_KEY
from .helpers import eventually, tiny_image, unique
from .server import ACCESS_KEY, ROOT, SECRET_KEY

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = ROOT / "docs" / "console"


@contextlib.contextmanager
def open_browser():
    """Headless Chromium under Selenium, quit on leaving."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/install-deps.sh --test)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser():
    with open_browser() as driver:
        yield driver


def _by(kind: str):
    from selenium.webdriver.common.by import By
    return getattr(By, kind)


def _sign_in(browser, server, access_key=ACCESS_KEY, secret_key=SECRET_KEY) -> None:
    browser.delete_all_cookies()
    browser.get(server.endpoint + "/console/")
    browser.find_element(_by("ID"), "access_key").send_keys(access_key)
    browser.find_element(_by("ID"), "secret_key").send_keys(secret_key)
    browser.find_element(_by("ID"), "sign-in").click()
    # Wait for the answer (a dashboard, or the refusal): the session cookie comes with it.
    _wait(browser, lambda b: b.find_elements(_by("ID"), "error") or b.find_elements(_by("ID"), "sign-out"),
          "the sign-in's answer")


def _wait(browser, check, what: str, within: float = 15):
    """check(browser) until it is true: a click that submits a form loads a new page, and an
    element found meanwhile may belong to the old one (stale), so those tries do not count."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, within, ignored_exceptions=(StaleElementReferenceException,
                                                              NoSuchElementException)).until(check, what)


def _text(browser, element_id: str) -> str:
    return browser.find_element(_by("ID"), element_id).text


def terminal_text(browser) -> str:
    """What the serial console's terminal (xterm.js) shows, scrollback included: a line a row."""
    return browser.execute_script(
        "const b = window.serialTerminal.buffer.active, lines = [];"
        "for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));"
        "return lines.join('\\n');")


def type_into_terminal(browser, keys: str) -> None:
    """Keys typed into the terminal, as a person does: xterm.js takes them in its hidden textarea."""
    browser.find_element(_by("CSS_SELECTOR"), "#terminal textarea").send_keys(keys)


def shot(browser, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def test_sign_in_launch_follow_and_end_an_instance(server, ec2, browser):
    _sign_in(browser, server, secret_key="wrong")
    _wait(browser, lambda b: "not able to validate" in _text(b, "error"), "the refusal")
    _sign_in(browser, server)
    _wait(browser, lambda b: b.find_element(_by("TAG_NAME"), "h1").text.startswith("Dashboard"), "the dashboard")
    shot(browser, "dashboard")
    browser.get(server.endpoint + "/console/instances")
    _wait(browser, lambda b: b.find_element(_by("ID"), "image_id"), "the launch form")
    image = tiny_image(ec2)
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element(_by("ID"), "image_id")).select_by_value(image)
    browser.find_element(_by("ID"), "user_data").send_keys("#!/bin/sh\necho from-the-console\n")
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    browser.find_element(_by("ID"), "launch-button").click()
    iid = eventually(lambda: ({i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                               for i in r["Instances"]} - before), "the launched instance").pop()
    row = f'tr[data-id="{iid}"] td.state'

    def state(b) -> str:
        return b.find_element(_by("CSS_SELECTOR"), row).text
    assert _wait(browser, lambda b: state(b), "its row") == "pending"  # as launched
    marker = browser.execute_script("window.notReloaded = 1; return window.notReloaded")
    _wait(browser, lambda b: state(b) == "running", "running shown without a reload", within=30)
    assert browser.execute_script("return window.notReloaded") == marker  # the same page, never reloaded
    shot(browser, "instances")
    browser.find_element(_by("LINK_TEXT"), iid).click()
    _wait(browser, lambda b: "ec2emu-none: boot" in _text(b, "console-output") or b.refresh(), "its console output",
          within=30)
    shot(browser, "instance")
    # Its serial console: typed into, answered (the none driver's pretend terminal).
    _wait(browser, lambda b: b.find_element(_by("ID"), "serial-link"), "the link").click()
    _wait(browser, lambda b: _text(b, "status") == "connected", "connected")
    _wait(browser, lambda b: "$ " in terminal_text(b), "a prompt")
    from selenium.webdriver.common.keys import Keys
    type_into_terminal(browser, "echo typed in chromium" + Keys.ENTER)
    _wait(browser, lambda b: "\ntyped in chromium\n" in terminal_text(b), "the answer")
    browser.get(server.endpoint + "/console/instances")
    _wait(browser, lambda b: b.find_element(_by("CSS_SELECTOR"), f'tr[data-id="{iid}"] button[name="stop"]'),
          "the stop button").click()
    _wait(browser, lambda b: state(b) == "stopped", "stopped", within=30)
    browser.find_element(_by("CSS_SELECTOR"), f'tr[data-id="{iid}"] button[name="terminate"]').click()
    _wait(browser, lambda b: state(b) == "terminated", "terminated", within=30)


def test_a_rule_and_a_volume_from_the_browser(server, ec2, browser):
    group = ec2.create_security_group(GroupName=unique("browser"), Description="browser")["GroupId"]
    iid = ec2.run_instances(ImageId=tiny_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    _sign_in(browser, server)
    browser.get(server.endpoint + "/console/security-groups")
    section = f'section[data-id="{group}"]'
    browser.find_element(_by("CSS_SELECTOR"), f'{section} input[name="IpPermissions.1.FromPort"]').send_keys("443")
    browser.find_element(_by("CSS_SELECTOR"), f'{section} input[name="IpPermissions.1.ToPort"]').send_keys("443")
    browser.find_element(_by("CSS_SELECTOR"), f'{section} input[name="IpPermissions.1.IpRanges.1.CidrIp"]').send_keys(
        "203.0.113.0/24")
    browser.find_element(_by("CSS_SELECTOR"), f"{section} form.add-rule button").click()
    rules = eventually(lambda: ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"],
                       "the rule added")
    assert rules[0]["FromPort"] == 443 and rules[0]["IpRanges"] == [{"CidrIp": "203.0.113.0/24"}]
    _wait(browser, lambda b: b.find_element(_by("CSS_SELECTOR"), f"{section} tr.rule"), "the rule shown")
    shot(browser, "security-groups")
    browser.find_element(_by("CSS_SELECTOR"), f"{section} tr.rule button").click()
    eventually(lambda: not ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"],
               "the rule removed")
    # A volume in the instance's zone, attached to it.
    zone = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    eventually(lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
               == "running", "running")
    browser.get(server.endpoint + "/console/volumes")
    from selenium.webdriver.support.ui import Select
    Select(_wait(browser, lambda b: b.find_element(_by("NAME"), "AvailabilityZone"), "the form")
           ).select_by_visible_text(zone)
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    browser.find_element(_by("ID"), "create-volume").click()
    vol = eventually(lambda: {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} - before, "a volume").pop()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available", "available")
    browser.get(server.endpoint + "/console/volumes")
    _wait(browser, lambda b: b.find_element(_by("CSS_SELECTOR"), f'tr[data-id="{vol}"] input[name="InstanceId"]'),
          "the volume's row").send_keys(iid)
    browser.find_element(_by("CSS_SELECTOR"), f'tr[data-id="{vol}"] form button').click()
    eventually(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "in-use", "attached")
    shot(browser, "volumes")
    # The other account signs in and sees none of it.
    _sign_in(browser, server, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
    _wait(browser, lambda b: b.find_element(_by("TAG_NAME"), "h1").text.startswith("Dashboard"), "signed in")
    for path, mine in (("instances", iid), ("volumes", vol), ("security-groups", group)):
        browser.get(server.endpoint + f"/console/{path}")
        assert "account 210987654321" in browser.page_source and mine not in browser.page_source
    ec2.terminate_instances(InstanceIds=[iid])
