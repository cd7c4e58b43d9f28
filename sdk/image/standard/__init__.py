"""Standard images of the Chutes templates (``chutes.image.standard.vllm.VLLM`` and friends)."""

VLLM = "chutes/vllm:nightly-2025111700"
SGLANG = "chutes/sglang:nightly-2025111800"
DIFFUSION = "chutes/diffusion:0.34.0.po"
TEI = "chutes/tei:1.8.2"

__all__ = ["DIFFUSION", "SGLANG", "TEI", "VLLM"]
