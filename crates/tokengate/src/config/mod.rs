//! Limits for models, families and tenants from a TOML file.
