# alembic runs this for each migration command; the environment is hubml's own
from hubml.extensions.common.migrate import run_migrations

run_migrations()
