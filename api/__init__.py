"""CareFed service: FastAPI + SQLModel API and web pages for hospital IT, clinicians and compliance officers."""
