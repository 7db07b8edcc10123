"""The in-memory store and bus against the contract every implementation must pass."""

from collections.abc import AsyncIterator

import pytest

from remsim_control import Bus, MemoryBus, MemoryStore, Store
from remsim_testing.store_contract import BusContract, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = MemoryStore()
        yield store
        await store.close()


class TestMemoryBus(BusContract):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[Bus]:
        bus = MemoryBus()
        yield bus
        await bus.close()
