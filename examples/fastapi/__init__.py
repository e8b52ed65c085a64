"""pgqueue in a FastAPI application: run it from the repository root with
`uvicorn examples.fastapi.app:api` and `pgqueue worker --app examples.fastapi.tasks:queue`
(see docs/fastapi.md).
"""
