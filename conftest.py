"""Root conftest: shared fixtures live in tests/fixtures/ as pytest plugins."""

pytest_plugins = ["tests.fixtures.pcsc", "tests.fixtures.servers", "tests.fixtures.procs"]
