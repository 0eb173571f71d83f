"""DevMesh front ends that are not chat bots: the HTTP API (FastAPI) and the CLI (typer).

They are thin: parse input, call one ``devmesh_core`` service, format the result.
"""
