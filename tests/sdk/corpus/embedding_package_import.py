from chutes.chute import NodeSelector
from chutes.chute.template import build_embedding_chute

chute = build_embedding_chute(
    username="corpus",
    model_name="BAAI/bge-large-en-v1.5",
    revision="d4aa6901d3a41ba39fb536a557fa166f842b0e09",
    node_selector=NodeSelector(gpu_count=1),
)
