import pytest

from tests.pgserver import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()
