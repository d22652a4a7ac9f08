import os

import pytest

from .server import ACCESS_KEY, SECRET_KEY, Server

# A second account for isolation tests: handed to every test server.
OTHER_ACCESS_KEY = "AKIAOTHERACCOUNT0001"
OTHER_SECRET_KEY = "otherSecretKey/EXAMPLE/0000000000000000"
OTHER_ACCOUNT = "210987654321"
CREDENTIALS = f"{ACCESS_KEY}:{SECRET_KEY}:123456789012,{OTHER_ACCESS_KEY}:{OTHER_SECRET_KEY}:{OTHER_ACCOUNT}"

# Under CI (CI set in the environment, as .ci/run does) a skipped test is a failure: CI installs
# everything the tests need, so a skip there means a broken set-up that would hide untested code.
# Only these may skip there, each for a reason CI cannot change:
ALLOWED_SKIPS = {
    # A cryptography build without DSA (newer OpenSSL builds drop it): nothing to install.
    "tests/test_keycrypto_unit.py::test_import_rejects_other_algorithms[dsa]",
}
STRICT = bool(os.environ.get("CI"))


def _allowed(nodeid: str) -> bool:
    return nodeid in ALLOWED_SKIPS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not _allowed(report.nodeid) and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (not in conftest.ALLOWED_SKIPS): {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped:  # a whole module skipped at import (importorskip)
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI: {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    """Every test that boots real guests (the `cloud` fixture) is marked slow: the PostgreSQL pass
    of tests/run.sh leaves them out (`-m "not slow"`), and an unmarked one would silently double
    the CI's longest part."""
    unmarked = [i.nodeid for i in items if "cloud" in getattr(i, "fixturenames", ()) and not i.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("tests that boot guests must be marked slow: " + ", ".join(unmarked))


def pytest_terminal_summary(terminalreporter):
    if STRICT:
        allowed = [r.nodeid for r in terminalreporter.stats.get("skipped", [])]
        terminalreporter.write_line(f"ec2emu: CI mode, skips allowed by conftest.ALLOWED_SKIPS: "
                                    f"{len(allowed)} {allowed}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One shared emulator for the whole run (tests use their own names/ids, never global counts)."""
    # Quotas raised: hundreds of tests share it, each leaving a VPC or two behind. AWS's default
    # quotas are tested on a server of their own (test_quotas.py).
    srv = Server(tmp_path_factory.mktemp("ec2emu"), {"EC2EMU_CREDENTIALS": CREDENTIALS, "EC2EMU_VPCS_PER_REGION": "1000",
                                                     "EC2EMU_INTERNET_GATEWAYS_PER_REGION": "1000"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ec2(server):
    return server.client()


@pytest.fixture(scope="session")
def other_account(server):
    return server.client(access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
