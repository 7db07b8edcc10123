"""The pool assignment engine (sans-IO): rules, methods, windows, leases, failures; and the
property that no card is ever given to two clients, over random event sequences."""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remsim_control.assignment import Event, Plan, PoolState, plan
from remsim_control.models import BankSlot, CardRecord, CardState, ClientSlot, Slotmap, SlotmapState
from remsim_control.pools import (
    Assignment,
    CardAdminState,
    CardRef,
    CardStatus,
    ClientGroup,
    DailyWindow,
    Method,
    Pool,
    Rule,
    parse_card_ref,
)

NEW, ACTIVE, DELETE_REQ = SlotmapState.NEW, SlotmapState.ACTIVE, SlotmapState.DELETE_REQ
T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC).timestamp()
"""Tuesday 1 December 2026, 12:00 UTC."""


def slot(bank: int, nr: int) -> BankSlot:
    return BankSlot(bank_id=bank, slot_nr=nr)


def client(cid: int, nr: int = 0) -> ClientSlot:
    return ClientSlot(client_id=cid, slot_nr=nr)


def pool_of(name: str, *slots: BankSlot) -> Pool:
    return Pool(name=name, cards=tuple(CardRef(bank=s) for s in slots))


@dataclass
class World:
    """A tiny model of the store: maps, connected clients, statuses, the scheduler's records;
    ``step`` plans and carries the plan out as the scheduler would."""

    pools: dict[str, Pool] = field(default_factory=dict)
    groups: dict[str, ClientGroup] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    statuses: dict[str, CardStatus] = field(default_factory=dict)
    assignments: dict[int, Assignment] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    maps: dict[int, Slotmap] = field(default_factory=dict)
    clients: set[ClientSlot] = field(default_factory=set)
    inventory: list[CardRecord] = field(default_factory=list)
    now: float = T0
    serial: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(1))

    def state(self) -> PoolState:
        return PoolState(
            pools=self.pools,
            groups=self.groups,
            rules=self.rules,
            statuses=self.statuses,
            assignments=self.assignments,
            cursors=self.cursors,
            slotmaps=list(self.maps.values()),
            clients=self.clients,
            inventory=self.inventory,
        )

    def step(self, event: Event = Event.TICK) -> Plan:
        result = plan(self.state(), event, self.now, self.rng)
        for removal in result.removals:
            self.remove(removal.slotmap.serial)
        for serial in result.forget:
            self.assignments.pop(serial, None)
        for assignment in result.record:
            self.assignments[assignment.serial] = assignment
        self.statuses.update(result.statuses)
        self.cursors.update(result.cursors)
        visible = [m for m in self.maps.values() if m.state.visible]
        banks, clients = {m.bank for m in visible}, {m.client for m in visible}
        for create in result.creations:
            assert create.bank not in banks and create.client not in clients  # as the store
            banks.add(create.bank)
            clients.add(create.client)
            self.serial += 1
            self.maps[self.serial] = Slotmap(
                serial=self.serial, bank=create.bank, client=create.client
            )
            self.assignments[self.serial] = Assignment(
                serial=self.serial,
                bank=create.bank,
                client=create.client,
                card=create.card,
                rule=create.rule,
                started=self.now,
                expires_at=create.expires_at,
            )
            status = self.statuses.get(create.card) or CardStatus(key=create.card)
            self.statuses[create.card] = status.mapped()
        return result

    def remove(self, serial: int) -> None:
        slotmap = self.maps[serial]
        if slotmap.state is NEW:
            del self.maps[serial]
        else:
            self.maps[serial] = slotmap.model_copy(update={"state": DELETE_REQ})

    def set_state(self, serial: int, state: SlotmapState, result: str | None = None) -> None:
        self.maps[serial] = self.maps[serial].model_copy(update={"state": state, "result": result})

    def bankd_removes(self) -> None:
        for serial in [s for s, m in self.maps.items() if m.state is DELETE_REQ]:
            del self.maps[serial]

    def map_of(self, c: ClientSlot) -> Slotmap | None:
        return next((m for m in self.maps.values() if m.client == c and m.state.visible), None)

    def bank_of(self, c: ClientSlot) -> BankSlot | None:
        slotmap = self.map_of(c)
        return None if slotmap is None else slotmap.bank

    def set_card(self, key: str, state: CardAdminState) -> None:
        status = self.statuses.get(key) or CardStatus(key=key)
        self.statuses[key] = status.set_state(state)


def lab(method: Method = Method.CYCLIC, cards: int = 3, **rule: object) -> World:
    world = World()
    world.pools["A"] = pool_of("A", *(slot(1, n) for n in range(cards)))
    world.groups["modems"] = ClientGroup(name="modems", clients=(client(1), client(2)))
    world.rules["r"] = Rule(name="r", group="modems", pools=("A",), method=method, **rule)  # type: ignore[arg-type]
    return world


# --- models -------------------------------------------------------------------------------


def test_card_refs_name_an_iccid_or_a_bank_slot() -> None:
    assert parse_card_ref("B1:7") == CardRef(bank=slot(1, 7))
    assert parse_card_ref("8949000000000000001").key == "8949000000000000001"
    with pytest.raises(ValueError):
        parse_card_ref("x")
    with pytest.raises(ValueError):
        CardRef()


def test_a_card_is_blocked_after_three_failures_and_enabling_clears_it() -> None:
    status = CardStatus(key="B1:0")
    for _ in range(3):
        status = status.failed("cardNotPresent", 3)
    assert status.state is CardAdminState.BLOCKED and status.failures == 3
    assert status.set_state(CardAdminState.ENABLED) == CardStatus(
        key="B1:0", failures=0, last_failure="cardNotPresent"
    )


def test_daily_window_past_midnight() -> None:
    night = DailyWindow(start="22:00", end="06:00")

    def at(h: int, m: int = 0, d: int = 1) -> float:
        return datetime.datetime(2026, 12, d, h, m, tzinfo=datetime.UTC).timestamp()

    assert not night.contains(at(21, 59))
    assert night.contains(at(22, 0)) and night.contains(at(5, 59, 2))
    assert not night.contains(at(6, 0, 2))
    assert night.next_change(at(12)) == at(22)
    assert night.next_change(at(23)) == at(6, 0, 2)
    weekdays = DailyWindow(start="09:00", end="17:00", days=(0, 1, 2, 3, 4))
    assert weekdays.contains(at(10, 0, 4))  # Friday
    assert not weekdays.contains(at(10, 0, 5))  # Saturday
    assert DailyWindow(start="00:00", end="00:00").contains(at(3))


# --- methods ------------------------------------------------------------------------------


def test_cyclic_gives_each_connecting_client_the_next_card() -> None:
    world = lab()
    world.clients.add(client(1))
    world.step(Event.CLIENT_CONNECTED)
    assert world.bank_of(client(1)) == slot(1, 0)
    world.clients.add(client(2))
    world.step(Event.CLIENT_CONNECTED)
    assert world.bank_of(client(2)) == slot(1, 1)


def test_disabling_a_card_moves_its_client_to_the_next() -> None:
    world = lab()
    world.clients.add(client(1))
    world.step()
    world.set_state(1, ACTIVE)
    world.set_card("B1:0", CardAdminState.DISABLED)
    result = world.step(Event.CARD_DISABLED)
    assert [r.reason for r in result.removals] == ["card B1:0 is disabled"]
    assert world.bank_of(client(1)) == slot(1, 1)  # the same plan assigns the next card


def test_cyclic_wraps_and_skips_busy_cards() -> None:
    world = lab(cards=2)
    world.clients.add(client(1))
    for expected in (slot(1, 0), slot(1, 1), slot(1, 0)):
        world.step()
        assert world.bank_of(client(1)) == expected
        world.remove(world.map_of(client(1)).serial)  # type: ignore[union-attr]
        world.step(Event.MAP_REMOVED)  # the plan finds the map gone ...
        world.bankd_removes()
    assert world.statuses["B1:0"].maps == 2


def test_least_used_picks_the_card_with_least_mapped_time() -> None:
    world = lab(Method.LEAST_USED)
    world.statuses = {
        "B1:0": CardStatus(key="B1:0", mapped_seconds=50),
        "B1:1": CardStatus(key="B1:1", mapped_seconds=10),
        "B1:2": CardStatus(key="B1:2", mapped_seconds=30),
    }
    world.clients |= {client(1), client(2)}
    world.step()
    assert world.bank_of(client(1)) == slot(1, 1)
    assert world.bank_of(client(2)) == slot(1, 2)


def test_mapped_time_is_counted_when_a_map_ends() -> None:
    world = lab()
    world.clients.add(client(1))
    world.step()
    world.now += 90
    world.remove(1)
    world.step(Event.MAP_REMOVED)
    assert world.statuses["B1:0"].mapped_seconds == 90
    assert world.statuses["B1:0"].maps == 1


def test_random_picks_a_free_card() -> None:
    world = lab(Method.RANDOM, cards=5)
    world.clients |= {client(1), client(2)}
    world.step()
    banks = {world.bank_of(client(1)), world.bank_of(client(2))}
    assert len(banks) == 2 and banks <= {slot(1, n) for n in range(5)}


def test_fixed_gives_the_nth_client_the_nth_card_or_nothing() -> None:
    world = lab(Method.FIXED)
    world.clients |= {client(1), client(2)}
    world.set_card("B1:1", CardAdminState.DISABLED)
    world.step()
    assert world.bank_of(client(1)) == slot(1, 0)
    assert world.bank_of(client(2)) is None


def test_cards_by_iccid_are_found_through_the_inventory() -> None:
    world = World()
    iccid = "8949000000000000001"
    world.pools["A"] = Pool(name="A", cards=(CardRef(iccid=iccid),))
    world.groups["g"] = ClientGroup(name="g", clients=(client(1),))
    world.rules["r"] = Rule(name="r", group="g", pools=("A",))
    world.clients.add(client(1))
    world.step()
    assert world.map_of(client(1)) is None  # no bankd reported the card
    world.inventory = [
        CardRecord(bank_slot=slot(2, 5), state=CardState.PRESENT, iccid=iccid, last_seen=T0)
    ]
    world.step()
    assert world.bank_of(client(1)) == slot(2, 5)


def test_an_empty_slot_is_not_assigned() -> None:
    world = lab(cards=2)
    world.inventory = [CardRecord(bank_slot=slot(1, 0), state=CardState.EMPTY, last_seen=T0)]
    world.clients.add(client(1))
    world.step()
    assert world.bank_of(client(1)) == slot(1, 1)


def test_clients_of_no_group_and_mapped_clients_are_left_alone() -> None:
    world = lab()
    world.clients |= {client(9), client(1)}
    world.serial = 100
    world.maps[100] = Slotmap(serial=100, bank=slot(7, 0), client=client(1), state=ACTIVE)
    assert world.step().creations == []


# --- leases, windows, priorities ------------------------------------------------------------


def test_a_lease_ends_and_the_next_card_is_assigned() -> None:
    world = lab(lease_seconds=3)
    world.clients.add(client(1))
    result = world.step()
    assert result.wake_at == T0 + 3
    world.set_state(1, ACTIVE)
    world.now = T0 + 2.9
    assert world.step().removals == []
    world.now = T0 + 3
    result = world.step(Event.LEASE_EXPIRED)
    assert [r.reason for r in result.removals] == ["its lease ended"]
    assert world.bank_of(client(1)) == slot(1, 1)


def test_a_manual_map_with_a_lease_is_removed_at_expiry() -> None:
    world = World()
    world.maps[5] = Slotmap(serial=5, bank=slot(3, 0), client=client(4), state=ACTIVE)
    world.assignments[5] = Assignment(
        serial=5, bank=slot(3, 0), client=client(4), started=T0, expires_at=T0 + 10
    )
    assert world.step().wake_at == T0 + 10
    world.now = T0 + 10
    assert [r.slotmap.serial for r in world.step().removals] == [5]


def test_a_window_maps_when_it_opens_and_unmaps_when_it_closes() -> None:
    world = lab(not_before=T0 + 60, not_after=T0 + 120)
    world.clients.add(client(1))
    assert world.step().wake_at == T0 + 60
    assert world.map_of(client(1)) is None
    world.now = T0 + 60
    world.step(Event.WINDOW_CHANGED)
    assert world.bank_of(client(1)) == slot(1, 0)
    world.now = T0 + 120
    result = world.step(Event.WINDOW_CHANGED)
    assert [r.reason for r in result.removals] == ["rule r is inactive now"]
    assert world.map_of(client(1)) is None


def test_a_nightly_rule_of_higher_priority_books_pool_b() -> None:
    world = lab()
    world.pools["B"] = pool_of("B", slot(2, 0), slot(2, 1))
    world.rules["night"] = Rule(
        name="night",
        group="modems",
        pools=("B",),
        priority=10,
        daily=DailyWindow(start="22:00", end="06:00"),
    )
    world.clients |= {client(1), client(2)}
    world.step()
    assert {world.bank_of(client(1)), world.bank_of(client(2))} == {slot(1, 0), slot(1, 1)}
    world.now = T0 + 10 * 3600  # 22:00
    world.step(Event.WINDOW_CHANGED)
    assert {world.bank_of(client(1)), world.bank_of(client(2))} == {slot(2, 0), slot(2, 1)}
    world.bankd_removes()
    world.now = T0 + 18 * 3600  # 06:00
    world.step(Event.WINDOW_CHANGED)
    banks = {world.bank_of(client(1)), world.bank_of(client(2))}
    assert banks and all(b is not None and b.bank_id == 1 for b in banks)


def test_deleting_the_rule_or_leaving_the_group_frees_the_card() -> None:
    world = lab()
    world.clients |= {client(1), client(2)}
    world.step()
    world.groups["modems"] = ClientGroup(name="modems", clients=(client(2),))
    result = world.step(Event.CONFIG_CHANGED)
    assert [r.slotmap.client for r in result.removals] == [client(1)]
    del world.rules["r"]
    assert [r.slotmap.client for r in world.step().removals] == [client(2)]


# --- failures -------------------------------------------------------------------------------


def test_three_refusals_block_a_card_which_is_then_skipped() -> None:
    world = lab(cards=1)
    world.pools["A"] = pool_of("A", slot(1, 0))
    world.clients.add(client(1))
    for failures in (1, 2, 3):
        world.step()
        slotmap = world.map_of(client(1))
        assert slotmap is not None and slotmap.bank == slot(1, 0)
        world.set_state(slotmap.serial, NEW, "cardNotPresent")
        result = world.step(Event.CARD_FAILED)
        assert world.statuses["B1:0"].failures == failures
        assert [r.slotmap.serial for r in result.removals] == [slotmap.serial]
    assert world.statuses["B1:0"].state is CardAdminState.BLOCKED
    assert world.map_of(client(1)) is None
    world.pools["A"] = pool_of("A", slot(1, 0), slot(1, 1))
    world.step(Event.CONFIG_CHANGED)
    assert world.bank_of(client(1)) == slot(1, 1)


def test_a_success_resets_the_failure_count_and_timeouts_are_no_failures() -> None:
    world = lab(cards=1)
    world.statuses["B1:0"] = CardStatus(key="B1:0", failures=2)
    world.clients.add(client(1))
    world.step()
    world.set_state(1, NEW, "timeout")
    assert world.step().removals == []
    world.set_state(1, ACTIVE)
    world.step()
    assert world.statuses["B1:0"].failures == 0


# --- the property ---------------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "connect",
                "disconnect",
                "ack",
                "refuse",
                "timeout",
                "bankd-removes",
                "delete",
                "manual-map",
                "disable",
                "enable",
                "time",
                "group",
            ]
        ),
        st.integers(0, 7),
    ),
    max_size=60,
)


def invariant(world: World) -> None:
    visible = [m for m in world.maps.values() if m.state.visible]
    assert len({m.bank for m in visible}) == len(visible), "a bank slot is mapped twice"
    assert len({m.client for m in visible}) == len(visible), "a client slot is mapped twice"
    visible_cards = [
        a.card
        for s, a in world.assignments.items()
        if a.card and s in world.maps and world.maps[s].state.visible
    ]
    assert len(set(visible_cards)) == len(visible_cards), "a card is assigned twice"


@settings(max_examples=300, deadline=None)
@given(
    actions=ACTIONS,
    method=st.sampled_from(list(Method)),
    seed=st.integers(0, 2**16),
)
def test_no_card_is_ever_assigned_to_two_clients(
    actions: list[tuple[str, int]], method: Method, seed: int
) -> None:
    world = World(rng=random.Random(seed))
    world.pools["A"] = pool_of("A", *(slot(1, n) for n in range(3)))
    world.pools["B"] = Pool(
        name="B", cards=(CardRef(bank=slot(1, 2)), CardRef(bank=slot(2, 0)))
    )  # B1:2 in both pools
    clients = [client(n) for n in range(1, 6)]
    world.groups["g"] = ClientGroup(name="g", clients=tuple(clients[:4]))
    world.groups["h"] = ClientGroup(name="h", clients=tuple(clients[2:]))
    world.rules["a"] = Rule(name="a", group="g", pools=("A",), method=method, lease_seconds=30)
    world.rules["b"] = Rule(
        name="b", group="h", pools=("B", "A"), priority=5, method=method,
        not_before=T0 + 100,
    )  # fmt: skip
    cards = ["B1:0", "B1:1", "B1:2", "B2:0"]
    for action, n in actions:
        c = clients[n % len(clients)]
        maps = sorted(world.maps)
        serial = maps[n % len(maps)] if maps else None
        if action == "connect":
            world.clients.add(c)
        elif action == "disconnect":
            world.clients.discard(c)
        elif action in ("ack", "refuse", "timeout") and serial is not None:
            state = world.maps[serial].state
            if (state is NEW or action == "ack") and state.visible:
                result = {"ack": None, "refuse": "cardNotPresent", "timeout": "timeout"}
                world.set_state(serial, ACTIVE if action == "ack" else NEW, result[action])
        elif action == "bankd-removes":
            world.bankd_removes()
        elif action == "delete" and serial is not None and world.maps[serial].state.visible:
            world.remove(serial)
        elif action == "manual-map":
            bank = slot(1 + n % 2, n % 3)
            visible = [m for m in world.maps.values() if m.state.visible]
            if all(m.bank != bank and m.client != c for m in visible):
                world.serial += 1
                world.maps[world.serial] = Slotmap(serial=world.serial, bank=bank, client=c)
        elif action == "disable":
            world.set_card(cards[n % 4], CardAdminState.DISABLED)
        elif action == "enable":
            world.set_card(cards[n % 4], CardAdminState.ENABLED)
        elif action == "time":
            world.now += 7 * (n + 1)
        elif action == "group":
            world.groups["g"] = ClientGroup(name="g", clients=tuple(clients[n % 3 : 4]))
        world.step()
        invariant(world)


LARGE_PLAN_BOUND = 1.0
"""Seconds a plan for 1,000 cards and 1,000 clients may take (about 0.01 s measured; the
bound catches a return to clients-times-cards work, which took seconds)."""


@pytest.mark.parametrize("method", list(Method))
def test_a_plan_for_a_thousand_clients_is_linear(method: Method) -> None:
    import time

    world = World()
    banks = [slot(1 + n // 100, n % 100) for n in range(1000)]
    clients = [client(n % 1000, n // 1000) for n in range(1000)]
    world.pools["A"] = pool_of("A", *banks)
    world.groups["g"] = ClientGroup(name="g", clients=tuple(clients))
    world.rules["r"] = Rule(name="r", group="g", pools=("A",), method=method)
    world.clients |= set(clients)
    started = time.perf_counter()
    result = plan(world.state(), Event.CLIENT_CONNECTED, world.now, world.rng)
    assert time.perf_counter() - started < LARGE_PLAN_BOUND
    assert len(result.creations) == 1000
    assert len({c.bank for c in result.creations}) == 1000
    world.step()  # carried out (the model's own checks are quadratic: not timed)
    started = time.perf_counter()
    steady = plan(world.state(), Event.TICK, world.now, world.rng)
    assert time.perf_counter() - started < LARGE_PLAN_BOUND
    assert steady.empty
