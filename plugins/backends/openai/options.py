"""Options of the `openai` backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class OpenAIOptions(BaseModel):
    """Options of the `openai` backend (`--backend-option key=value`)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("http://127.0.0.1:8000/v1", description="The API root, up to and including /v1.")
    model: str | None = Field(None, description="Model name the server knows (default: --model).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the API key (never the key itself)."
    )
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="completions sends the rendered prompt; chat sends messages."
    )
    revision: str | None = Field(
        None, description="Pins the model's identity in the cache key instead of asking the server's /models."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Per attempt: connect, send, and wait for the answer.")
    max_retries: int = Field(5, ge=0, description="Further attempts after a retryable failure.")
    backoff_s: float = Field(0.5, ge=0, description="Base delay; attempt n waits about backoff_s * 2**n.")
    max_backoff_s: float = Field(
        60.0, ge=0, description="Longest wait between attempts, Retry-After included."
    )
    tokenizer: str | None = Field(
        None, description="Local tokenizer directory to count tokens when the server reports no usage."
    )

    @field_validator("model", "revision", "tokenizer", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # `-o revision=2024-06-01` arrives as a YAML date and `-o revision=3` as an int.
        return None if value is None else str(value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")
