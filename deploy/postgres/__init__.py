"""Local PostgreSQL for tests, the demo and benchmarks (:mod:`deploy.postgres.pg_local`)."""
