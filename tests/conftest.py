import pytest

from .server import ACCESS_KEY, SECRET_KEY, Server

# A second account for isolation tests: handed to every test server.
OTHER_ACCESS_KEY = "AKIAOTHERACCOUNT0001"
OTHER_SECRET_KEY = "otherSecretKey/EXAMPLE/0000000000000000"
OTHER_ACCOUNT = "210987654321"
CREDENTIALS = f"{ACCESS_KEY}:{SECRET_KEY}:123456789012,{OTHER_ACCESS_KEY}:{OTHER_SECRET_KEY}:{OTHER_ACCOUNT}"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One shared emulator for the whole run (tests use their own names/ids, never global counts)."""
    srv = Server(tmp_path_factory.mktemp("ec2emu"), {"EC2EMU_CREDENTIALS": CREDENTIALS}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ec2(server):
    return server.client()


@pytest.fixture(scope="session")
def other_account(server):
    return server.client(access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
