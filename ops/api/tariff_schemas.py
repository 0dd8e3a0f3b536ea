"""Bodies of the tariff API and the cost shown on a session. Amounts are decimal text in JSON (as the
database and `chargeops.tariffs` keep them: no float on the way); requests take numbers or text."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator

from chargeops.currencies import MINOR_UNITS
from ops.api.schemas import Input, UtcTime


def _currency(code: str) -> str:
    if code not in MINOR_UNITS:
        raise ValueError(f"{code} is not an ISO 4217 currency in use (e.g. EUR, USD, CHF)")
    return code


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
Price = Annotated[Decimal, Field(ge=0, le=10**6, max_digits=12, decimal_places=6, allow_inf_nan=False)]
GROUP_PATTERN = r"^[\x21-\x7e]{1,36}$"
Group = Annotated[str, Field(pattern=GROUP_PATTERN, description="an id-token group (`group_id`)")]


class TariffIn(Input):
    """Every amount is net of tax (`tax_pct` adds it; 0: the prices are what the driver pays), in
    `currency`; minutes count by the second."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    currency: Currency
    per_kwh: Price = Decimal(0)
    per_minute_charging: Price = Field(default=Decimal(0), description="per minute energy flows")
    per_minute_idle: Price = Field(default=Decimal(0), description="per minute plugged in, not charging")
    idle_grace_minutes: Annotated[int, Field(ge=0, le=10_080)] = 0
    session_fee: Price = Decimal(0)
    min_cost: Price | None = Field(default=None, description="the least a session costs (net)")
    max_cost: Price | None = Field(default=None, description="the most a session costs (net)")
    tax_pct: Annotated[Decimal, Field(ge=0, le=100, max_digits=7, decimal_places=3)] = Decimal(0)
    display_text: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, description="what stations show the driver (OCPP personalMessage); default: the prices"
    )
    language: Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,4})?$")] | None = Field(
        default=None, description="RFC 5646 language of `display_text`, at most 8 characters"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_cost is not None and self.max_cost is not None and self.min_cost > self.max_cost:
            raise ValueError(f"min_cost {self.min_cost} is above max_cost {self.max_cost}")
        return self


class TariffOut(BaseModel):
    id: int
    name: str
    currency: str
    per_kwh: str
    per_minute_charging: str
    per_minute_idle: str
    idle_grace_minutes: int
    session_fee: str
    min_cost: str | None
    max_cost: str | None
    tax_pct: str
    display_text: str | None
    language: str | None
    shown_as: str = Field(description="the text stations show the driver: `display_text`, or the prices")
    updated_at: UtcTime


class AssignmentIn(Input):
    """`site` and `group` null: the default tariff. A group's tariff applies at every site unless the site
    has one for that group; it overrides the site's own."""

    tariff_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    site: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    group: Group | None = None


class AssignmentOut(BaseModel):
    site: str | None
    group: str | None
    tariff_id: int
    updated_at: UtcTime
