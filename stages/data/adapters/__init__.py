"""Price sources for the data stage, one file each, behind `base.Source`."""
from __future__ import annotations

from stages.data.adapters.base import Fetched, Source

SOURCES = {
    "akshare": "Chinese ETFs (.SH/.SZ) from Eastmoney through akshare: unadjusted daily bars "
               "(fund_etf_hist_em, adjust=''), cash dividends (fund_etf_dividend_sina) and share splits (fund_cf_em)",
    "yfinance": "US ETFs from Yahoo Finance through yfinance: Ticker.history(auto_adjust=False, actions=True), "
                "splits taken back out of Yahoo's split-adjusted bars, dividends and splits as events",
}


def make_source(name: str) -> Source:
    """The adapter called `name` (akshare | yfinance), talking to the real vendor."""
    if name == "akshare":
        from stages.data.adapters.akshare import AkshareSource

        return AkshareSource()
    if name == "yfinance":
        from stages.data.adapters.yfinance import YfinanceSource

        return YfinanceSource()
    raise ValueError(f"unknown source {name!r}")


def source_for(symbol: str, provider: str) -> str:
    """provider 'auto': akshare for Shanghai/Shenzhen symbols (.SH/.SZ), yfinance for the rest."""
    if provider != "auto":
        return provider
    return "akshare" if symbol.upper().endswith((".SH", ".SZ")) else "yfinance"


__all__ = ["Fetched", "Source", "SOURCES", "make_source", "source_for"]
