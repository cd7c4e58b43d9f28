# A diffusion chute from a civitai.com model at a given version, with the names real files import.
from chutes.chute import NodeSelector
from chutes.chute.template import build_diffusion_chute
from chutes.chute.template.diffusion import GenerationInput, MinifiedGenerationInput

EXAMPLE = MinifiedGenerationInput()
SCHEMA = GenerationInput

chute = build_diffusion_chute(
    username="corpus",
    name="dreamshaper-xl",
    model_name_or_url="https://civitai.com/models/112902/dreamshaper-xl",
    version="351306",
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
    concurrency=2,
    tee=False,
)
