"""A two-transaction contract that exercises exactly the shim paths the faults live on (unit tests only)."""

from fabric_network.shim import Contract, TransactionContextInterface


class ShimProbeContract(Contract):
    """``record`` writes a key and emits an event; ``read`` returns a key's value."""

    Name = "Probe"

    async def record(self, ctx: TransactionContextInterface, key: str, value: str) -> str:
        stub = ctx.get_stub()
        await stub.put_state(key, value.encode())
        stub.set_event("Recorded", key.encode())
        return key

    async def record_many(self, ctx: TransactionContextInterface, keys: str, value: str) -> int:
        """Write ``value`` under each comma-separated key; a key with a space is refused after the writes."""
        names = keys.split(",")
        for key in names:
            await ctx.get_stub().put_state(key, value.encode())
        if any(" " in key for key in names):
            raise ValueError("keys: no spaces")
        return len(names)

    async def read(self, ctx: TransactionContextInterface, key: str) -> str:
        value: bytes = await ctx.get_stub().get_state(key)
        return value.decode()
