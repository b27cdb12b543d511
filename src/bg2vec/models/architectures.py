"""What differs between decoder families, as data (cf. peft's target-module mapping).

Everything else, bidirectional attention included, is one mechanism for all of them. An architecture
outside this table still works if transformers lets its config switch off causality; `bidirectional.py`
checks that by running the model, not by looking the name up here.
"""

from __future__ import annotations

from dataclasses import dataclass

STANDARD_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """Per-family facts that the recipes need."""

    model_type: str
    lora_target_modules: tuple[str, ...] = STANDARD_LORA_TARGETS
    # Text that llm2vec appends (verbatim, after the text's trailing whitespace is stripped) for `eos_token`
    # pooling, so outputs match its embeddings. Used only if the tokenizer knows it as one token.
    eos_text: str = " </s>"
    # Attention implementations transformers runs for this family (tests cross each with the family).
    attn_implementations: tuple[str, ...] = ("eager", "sdpa")
    notes: str = ""


ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("mistral", notes="BgGPT-7B-Instruct-v0.2 and Mistral-7B; the seed's model."),
        Architecture("llama", notes="Llama 2/3, Sheared-LLaMA, SmolLM2."),
        Architecture("qwen2", eos_text="<|endoftext|>", notes="llm2vec's Qwen2 stayed causal; ours does not."),
        Architecture("gemma", eos_text="<eos>"),
        Architecture("gemma2", eos_text="<eos>", attn_implementations=("eager",),
                     notes="Attention logit soft-capping: transformers 5 refuses sdpa for it."),
        Architecture("gemma3_text", eos_text="<eos>", notes="Sliding-window layers become bidirectional windows."),
        Architecture("qwen3", eos_text="<|endoftext|>"),
    )
}

