"""Risk profiles for the execution layer (config/risk_profiles/*.json)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RiskProfile(BaseModel):
    """Portfolio-level limits applied to a batch of orders before they reach a broker."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    max_position_size: float = Field(gt=0, le=1, description="largest position, fraction of equity (before quality scaling)")
    max_drawdown: float = Field(gt=0, lt=1, description="no new buys while portfolio drawdown >= this")
    circuit_breaker: float = Field(gt=0, lt=1, description="drawdown that trips the breaker (persists until reset)")
    stop_loss: float = Field(gt=0, lt=1, description="per-position stop loss the trading stage's stops are expected to honour")
    max_deployment: float = Field(0.80, gt=0, le=1, description="invested fraction above which buys stop")
    cash_buffer_min: float = Field(0.20, ge=0, lt=1, description="cash kept after buys (lower edge of the band)")
    cash_buffer_max: float = Field(0.80, gt=0, le=1, description="upper edge: reported, never blocks a first buy")
    max_positions: int = Field(10, ge=1)
    max_correlation: float = Field(0.80, gt=0, le=1, description="|rho| of daily returns counted as highly correlated")
    max_correlated_positions: int = Field(2, ge=0, description="at most this many held positions highly correlated with a new one")
    min_quality: float = Field(0.30, ge=0, le=1)
    correlation_window: int = Field(60, ge=10)
    sharpe_window: int = Field(60, ge=10)

    @model_validator(mode="after")
    def _band(self) -> "RiskProfile":
        if self.cash_buffer_min >= self.cash_buffer_max:
            raise ValueError("cash_buffer_min must be below cash_buffer_max")
        return self
