# with_entrypoint given one string, as some files do.
from chutes.chute import Chute
from chutes.image import Image

image = Image(username="corpus", name="echo-image", tag="1").with_entrypoint("python -m chutes.entrypoint")

chute = Chute(username="corpus", name="echo", image=image)


@chute.cord(public_api_path="/echo", public_api_method="POST")
def echo(self, text: str) -> str:
    return text
