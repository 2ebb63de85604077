"""What a client may use: the limits an operator sets, for every key or for one route.

Example, `GATEWAY_RATE_LIMITS='{"requests_per_minute": 600, "tokens_per_minute": 200000}'`, or
in a route's table of the routes file::

    rate_limits = { requests_per_minute = 120, concurrent = 4 }
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RateLimits(BaseModel):
    """Limits on one API key (unset: no limit). Tokens are prompt plus completion, as the
    engines' `usage` counts them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests a minute.")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Prompt plus completion tokens a minute."
    )
    concurrent: int | None = Field(default=None, ge=1, description="Requests in flight at once.")

    @property
    def is_set(self) -> bool:
        return any(
            limit is not None
            for limit in (self.requests_per_minute, self.tokens_per_minute, self.concurrent)
        )
