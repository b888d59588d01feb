from tests.unit.bench.conftest import fake_server

__all__ = ["fake_server"]
