"""Database schema and engine; migrations live in `chargeops/migrations`."""
