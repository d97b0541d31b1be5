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
    stop_loss: float = Field(gt=0, lt=1, description="sell a holding whose last price is this far below its average cost")
    max_deployment: float = Field(0.80, gt=0, le=1, description="invested fraction above which buys stop")
    cash_buffer_min: float = Field(0.20, ge=0, lt=1, description="cash kept after buys (lower edge of the band)")
    cash_buffer_max: float = Field(0.80, gt=0, le=1, description="upper edge: rebalance sells stop there, and cash above it "
                                   "after a batch is a warning (never blocks a buy)")
    max_positions: int = Field(10, ge=1)
    max_correlation: float = Field(0.80, gt=0, le=1, description="|rho| of daily returns counted as highly correlated")
    max_correlated_positions: int = Field(2, ge=0, description="at most this many held positions highly correlated with a new one")
    min_quality: float = Field(0.30, ge=0, le=1)
    correlation_window: int = Field(60, ge=10)
    sharpe_window: int = Field(60, ge=10)
    scale_by_quality: bool = Field(True, description="size buys by quality x max_position_size; false: the model's size, capped")
    small_position: float = Field(0.01, ge=0, lt=1, description="warn when an approved buy is worth less than this fraction of equity")
    deployment_warning: float = Field(0.05, ge=0, lt=1, description="warn when deployment comes within this of max_deployment")

    @model_validator(mode="after")
    def _band(self) -> "RiskProfile":
        if self.cash_buffer_min >= self.cash_buffer_max:
            raise ValueError("cash_buffer_min must be below cash_buffer_max")
        return self
