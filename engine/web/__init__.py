"""The HTTP port: one ASGI app (Starlette on uvicorn) for the ops API, DICOMweb and
the site console, behind one access gate."""
