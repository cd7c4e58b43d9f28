# Chute.initialize() called by the file itself, and a cord using FastAPI's request parameters.
import asyncio

from fastapi import Depends, Header, HTTPException, Request

from chutes.chute import Chute

chute = Chute(username="corpus", name="fastapi-native", image="parachutes/python:3.12")


def require_key(x_app_key: str = Header("")) -> str:
    if x_app_key != "open-sesame":
        raise HTTPException(status_code=401, detail="bad key")
    return x_app_key


@chute.on_startup()
async def load(self):
    self.loaded = getattr(self, "loaded", 0) + 1


@chute.cord(public_api_path="/secure")
async def secure(self, text: str, request: Request, key: str = Depends(require_key)) -> dict:
    return {"text": text, "client": request.client.host if request.client else None}


if __name__ == "__main__":
    asyncio.run(chute.initialize())
