"""The channel layer copes with many sockets connecting at the same moment (bench.live)."""

import asyncio

import pytest
from channels.layers import get_channel_layer

pytestmark = pytest.mark.asyncio
SOCKETS = 150  # more than redis-py 8's default asyncio pool of 100 connections


async def test_more_than_a_hundred_sockets_can_join_a_group_at_the_same_moment():
    """Each connecting socket joins its group (one Redis command on a pooled connection); with
    redis-py 8's default pool, the 101st at once failed with MaxConnectionsError: a 500."""
    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(SOCKETS)]
    results = await asyncio.gather(
        *(layer.group_add("many-sockets", channel) for channel in channels), return_exceptions=True
    )
    try:
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        await asyncio.gather(*(layer.group_discard("many-sockets", channel) for channel in channels))
