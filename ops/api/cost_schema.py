"""The cost shown on a session (`GET /api/transactions`), apart from the tariff bodies so that the session
bodies can use it without importing the tariff API's."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CostOut(BaseModel):
    """A session's cost under its tariff, line by line (decimal text, rounded to the currency's minor unit):
    final once it ended (as its station was told), else as of now."""

    tariff_id: int | None
    tariff_name: str
    currency: str
    final: bool
    energy: str
    charging_time: str
    idle_time: str
    session_fee: str
    adjustment: str = Field(description="what the tariff's minimum added (+) or maximum took off (−)")
    net: str
    tax: str
    total: str = Field(description="tax included: OCPP totalCost")
