"""What a loop's work would cost on a paid fine-tuning service or a rented GPU.

Token counts are measured; prices and throughputs come from a table the user edits
(`harness/prices.yaml` is the example shipped with the harness).
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import ConfigError

ENV_PRICES = "HARNESS_PRICES"


class ServicePrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    training_per_million: float = Field(ge=0)
    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class GpuPrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    per_hour: float = Field(ge=0)
    train_tokens_per_second: float = Field(gt=0)
    generate_tokens_per_second: float = Field(gt=0)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: str
    currency: str = "USD"
    services: list[ServicePrice] = Field(default_factory=list)
    gpus: list[GpuPrice] = Field(default_factory=list)


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table from `path`, $HARNESS_PRICES, or the example shipped with the harness."""
    from harness.suite.files import decode_utf8, parse_yaml_model

    source = path or os.environ.get(ENV_PRICES)
    if source:
        file = Path(source)
        if not file.is_file():
            raise ConfigError(f"price table {file} does not exist")
        data = file.read_bytes()
    else:
        file = Path("harness/prices.yaml")
        data = (importlib.resources.files("harness") / "prices.yaml").read_bytes()
    table = parse_yaml_model(decode_utf8(data, file), file, PriceTable, "price table")
    assert isinstance(table, PriceTable)
    return table


@dataclass(frozen=True)
class Work:
    """Tokens one iteration (or a whole loop) trained and evaluated."""

    train_tokens: int = 0
    eval_input_tokens: int = 0
    eval_output_tokens: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.train_tokens + other.train_tokens,
            self.eval_input_tokens + other.eval_input_tokens,
            self.eval_output_tokens + other.eval_output_tokens,
        )


def estimate(work: Work, prices: PriceTable) -> dict[str, Any]:
    """Cost of `work` under every service and GPU of the table.

    GPU time counts training and generation at the table's throughputs (prompt
    processing is left out: it is small next to generation for short prompts)."""
    services = {
        s.name: round(
            work.train_tokens / 1e6 * s.training_per_million
            + work.eval_input_tokens / 1e6 * s.input_per_million
            + work.eval_output_tokens / 1e6 * s.output_per_million,
            6,
        )
        for s in prices.services
    }
    gpus = {}
    for g in prices.gpus:
        hours = (
            work.train_tokens / g.train_tokens_per_second
            + work.eval_output_tokens / g.generate_tokens_per_second
        ) / 3600
        gpus[g.name] = {"hours": round(hours, 6), "cost": round(hours * g.per_hour, 6)}
    return {
        "currency": prices.currency,
        "prices_as_of": prices.as_of,
        "tokens": {
            "trained": work.train_tokens,
            "evaluated_input": work.eval_input_tokens,
            "evaluated_output": work.eval_output_tokens,
        },
        "services": services,
        "gpus": gpus,
    }
