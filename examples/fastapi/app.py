"""The example's web application: orders placed in a SQLAlchemy AsyncSession, their jobs
enqueued in the same transaction, and endpoints that report on a job or wait for its result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import psycopg
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import pgqueue
from pgqueue.contrib.fastapi import JobInfo
from pgqueue.contrib.fastapi import lifespan as queue_lifespan

from .tasks import PRICES_CENTS, price_order, queue

metadata = sa.MetaData()
orders = sa.Table(
    "example_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)
stock = sa.Table(
    "example_stock",
    metadata,
    sa.Column("item", sa.Text, primary_key=True),
    sa.Column("available", sa.Integer, nullable=False),
)
INITIAL_STOCK = {"widget": 100, "gadget": 5}

# The queue's database, through psycopg 3's async driver. `async_creator` takes every DSN form
# pgqueue does (a URL or a libpq "host=... dbname=..." string) and reads it at connect time.
engine = create_async_engine(
    "postgresql+psycopg://", async_creator=lambda: psycopg.AsyncConnection.connect(queue.dsn)
)
sessions = async_sessionmaker(engine, expire_on_commit=False)


async def session_in_transaction() -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint returns, rolled back if it
    raises (an HTTPException included), with every job enqueued in it."""
    async with sessions.begin() as session:
        yield session


# scope="function": commit before the response is sent. FastAPI's default ends a dependency
# after the response, so a client could be told 201 about an order (and a job id) that is not
# committed yet, or never will be.
Session = Annotated[AsyncSession, Depends(session_in_transaction, scope="function")]


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with queue_lifespan(queue)(api):
        async with engine.begin() as conn:  # the example's own tables, made if missing
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                insert(stock)
                .values([{"item": k, "available": v} for k, v in INITIAL_STOCK.items()])
                .on_conflict_do_nothing()
            )
        try:
            yield
        finally:
            await engine.dispose()


api = FastAPI(title="pgqueue FastAPI example", lifespan=lifespan)


@api.exception_handler(pgqueue.JobNotFound)
async def job_not_found(request: Request, exc: pgqueue.JobNotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


class OrderIn(BaseModel):
    item: str
    quantity: int = Field(gt=0)


class OrderOut(BaseModel):
    order_id: int
    job_id: int


@api.post("/orders", status_code=status.HTTP_201_CREATED)
async def place_order(order: OrderIn, session: Session) -> OrderOut:
    """Insert the order and enqueue its pricing job in the request's transaction."""
    if order.item not in PRICES_CENTS:
        raise HTTPException(422, f"no such item: {order.item}")
    order_id = (
        await session.execute(
            orders.insert().values(item=order.item, quantity=order.quantity).returning(orders.c.id)
        )
    ).scalar_one()
    job = await price_order.aapply_async(
        args=(order_id, order.item, order.quantity), connection=session
    )
    # The stock is taken last on purpose: when there is not enough, the order and its job,
    # both already written, vanish with the transaction; no worker ever sees the job.
    taken = await session.execute(
        stock.update()
        .where(stock.c.item == order.item, stock.c.available >= order.quantity)
        .values(available=stock.c.available - order.quantity)
    )
    if taken.rowcount == 0:
        raise HTTPException(status.HTTP_409_CONFLICT, f"not enough {order.item} in stock")
    return OrderOut(order_id=order_id, job_id=job.id)


@api.get("/jobs/{job_id}")
async def job_status(job_id: int) -> JobInfo:
    """The job as it is now; 404 for an unknown id."""
    return JobInfo.of(await queue.aget_job(job_id))


@api.get(
    "/jobs/{job_id}/result",
    responses={status.HTTP_202_ACCEPTED: {"model": JobInfo, "description": "Not finished yet"}},
)
async def job_result(
    job_id: int,
    response: Response,
    timeout: Annotated[float, Query(gt=0, le=30)] = 10.0,
) -> JobInfo:
    """Wait up to `timeout` seconds for the job to finish: 200 with its result (or its error),
    or 202 with its status if it has not finished by then.

    The wait is a LISTEN on a connection of its own, awaited: the event loop serves other
    requests meanwhile. Each waiting request holds one database connection, hence the cap.
    """
    job = await queue.aget_job(job_id)
    try:
        await job.wait_async(timeout=timeout)
    except TimeoutError:
        response.status_code = status.HTTP_202_ACCEPTED
        await job.arefresh()
    except pgqueue.JobFailed:
        pass  # failed or cancelled: the handle is up to date, its error is in the answer
    return JobInfo.of(job)
