"""Settings of retrieval and diagnosis (``DEVMESH_REASON__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ReasonSettings(BaseModel):
    """Which LLM (if any) diagnoses, and how much evidence it sees."""

    # --- LLM backend and redaction (RUNBOOKS/LLM helper) --------------------------------
    llm: str = Field(
        default="none",
        description="'none' (deterministic diagnosis), 'ollama', 'llamacpp', or a full spec "
        "'ollama://host:port/model' / 'llamacpp:///path/model.gguf'",
    )
    ollama_url: str = Field(
        default="http://127.0.0.1:11434", description="the Ollama server ('ollama' backend)"
    )
    ollama_model: str = Field(default="qwen2.5:7b-instruct", description="Ollama model tag")
    llamacpp_model: Path | None = Field(
        default=None, description="GGUF file for the in-process llama.cpp backend"
    )
    llamacpp_ctx: int = Field(default=4096, ge=512, le=131072)
    llamacpp_threads: int = Field(default=2, ge=1, le=256)
    llm_timeout: float = Field(default=60.0, gt=0, description="seconds per LLM call")
    llm_max_tokens: int = Field(default=768, ge=16, le=32768)

    # Redaction of evidence before it reaches an LLM (or leaves the machine in a message).
    redact: bool = Field(default=True, description="mask secrets before text reaches an LLM")
    redact_emails: bool = True
    redact_ips: bool = False
    redact_hostnames: bool = False

    runbooks_dir: Path | None = Field(
        default=None,
        description="runbook folder; default <data_dir>/runbooks if it exists, else the "
        "bundled runbooks",
    )
    # --- end of RUNBOOKS/LLM fields; the REASON helper's fields follow ------------------

    # --- retrieval and diagnosis (REASON helper) ----------------------------------------
    window: str = Field(
        default="1h", description="how far back `ask` looks when no window is given"
    )
    baseline_factor: float = Field(
        default=4.0,
        gt=0,
        le=48,
        description="the baseline is the window's length times this, just before it: error "
        "rates in the window are compared with it to find what changed",
    )
    evidence_budget_tokens: int = Field(
        default=1800, ge=200, le=32000, description="tokens of evidence one bundle may hold"
    )
    max_evidence: int = Field(default=40, ge=5, le=200, description="evidence items per bundle")
    top_templates: int = Field(
        default=12, ge=1, le=100, description="distinguishing templates kept per bundle"
    )
    vector_hits: int = Field(default=8, ge=0, le=50, description="nearest templates per question")
    max_scan_events: int = Field(
        default=20_000, ge=100, description="most events read per window where SQL cannot count"
    )
    history_turns: int = Field(
        default=4, ge=0, le=20, description="earlier questions a conversation keeps"
    )
    use_graph: bool = Field(
        default=True,
        description="expand evidence through the knowledge graph (opens the embedded "
        "FalkorDB on first use); off = store, topology file and runbooks only",
    )
